// A memory snapshot of Pyodide with the live calculator already imported (`make calculator`).
//
// Usage: node scripts/build_calculator_snapshot.mjs PYODIDE_DIR SITE_STATIC_DIR
//
// Starting Pyodide means compiling CPython to machine code and then initialising the
// interpreter and importing the estimator: the second part is most of the calculator's cold
// start on a slow machine.  Pyodide can save its WebAssembly memory after that work
// (`_makeSnapshot` / `makeMemorySnapshot`, an experimental API of Pyodide itself) and start
// from the saved memory later (`_loadSnapshot`).  This script does exactly what the page does
// (unpack the wheel of SITE_STATIC_DIR/calculator/, import the bridge, build the schema, run
// the default scenario), then writes the snapshot gzip-compressed to
// SITE_STATIC_DIR/calculator/pyodide-snapshot.bin.gz and its name, size and SHA-256 into
// manifest.json.  The page still unpacks the wheel after a restore (the file system is not
// part of the snapshot) and falls back to a plain start when the snapshot cannot be used.
// The snapshot belongs to one Pyodide build: it is made from the vendored copy the site serves.
// Defined in Part I, "The live calculator".
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const [pyodideDir, staticDir] = process.argv.slice(2);
if (!pyodideDir || !staticDir) {
  console.error("usage: node scripts/build_calculator_snapshot.mjs PYODIDE_DIR SITE_STATIC_DIR");
  process.exit(2);
}
const calcDir = path.join(staticDir, "calculator");
const manifestPath = path.join(calcDir, "manifest.json");
const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"));
const bridgePath = path.resolve(path.dirname(new URL(import.meta.url).pathname),
  "..", "_assets", "calculator", "calculator.py");

const require = createRequire(import.meta.url);
const { loadPyodide } = require(path.resolve(pyodideDir, "pyodide.js"));
const py = await loadPyodide({ indexURL: path.resolve(pyodideDir) + path.sep, _makeSnapshot: true });
const wheel = new Uint8Array(fs.readFileSync(path.join(calcDir, manifest.wheel)));
const site = py.runPython("import site; site.getsitepackages()[0]");
py.unpackArchive(wheel, "wheel", { extractDir: site });
py.FS.mkdirTree("/home/pyodide/calculator");
py.FS.writeFile("/home/pyodide/calculator/calculator.py", fs.readFileSync(bridgePath, "utf8"));
// The same start-up as calculator.js, ending on the default scenario; no JavaScript object
// may stay referenced from Python (a snapshot holds only Python's memory).
py.runPython(`
import importlib, json, os, sys
importlib.invalidate_caches()
sys.path.insert(0, '/home/pyodide/calculator')
os.chdir('/home/pyodide/calculator')
import calculator
json.loads(calculator.schema())
json.loads(calculator.compute('{}'))
`);
const snapshot = py.makeMemorySnapshot();
const gz = zlib.gzipSync(Buffer.from(snapshot), { level: 6 });
const name = "pyodide-snapshot.bin.gz";
fs.writeFileSync(path.join(calcDir, name), gz);
manifest.snapshot = {
  file: name, bytes: snapshot.length, gzip_bytes: gz.length, pyodide: py.version,
  sha256: createHash("sha256").update(gz).digest("hex"),
};
fs.writeFileSync(manifestPath, JSON.stringify(manifest, null, 1) + "\n");
console.log(`build_calculator_snapshot: ${name}, ${(gz.length / 2 ** 20).toFixed(1)} MiB ` +
  `(${(snapshot.length / 2 ** 20).toFixed(1)} MiB of Pyodide ${py.version} memory)`);
