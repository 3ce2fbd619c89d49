#!/bin/sh
# Replace bibliography keys merged into one entry per work (issue 18), inside {cite} roles only.
# Idempotent: re-run after merging a branch that still uses an old key.
#   sh scripts/merge_bib_keys.sh chapters/**/*.ipynb chapters/**/*.md
for old_new in dettmers2023qlora:q-dettmers2023 micikevicius2022fp8:q-micikevicius2022 \
               q-hinton2015:hinton2015distilling mishra2021sparse:mishra2021accelerating \
               hu2021lora:hu2022lora jacob2018quantization:q-jacob2018; do
  old=${old_new%%:*}; new=${old_new#*:}
  # a key inside {cite...}`k1,k2`: preceded by ` or , and followed by , or `
  sed -i -E ":a; s/(\{cite[a-z:]*\}\`([^\`]*,)?)$old([,\`])/\1$new\3/; ta" "$@"
done
