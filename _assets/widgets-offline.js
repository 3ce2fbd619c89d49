// Loaded only on pages with saved Jupyter widget state, between require.js and the widgets'
// HTML manager (see nb_ipywidgets_js in _config.yml).  Two things make those widgets render
// offline and without console errors:
// 1. The HTML manager fetches its icon fonts relative to the URL of its AMD module; map that
//    module to the copy served from this site (_static/html-manager, `make assets`) instead of
//    a path relative to the page (or a CDN).
// 2. It typesets widget labels with the MathJax 2 call MathJax.Hub.Queue; this site runs
//    MathJax 3, so provide that call on top of MathJax 3's typesetPromise.
(function () {
  var root = document.documentElement.dataset.content_root || "";
  if (window.require && window.require.config) {
    // Every bundled @jupyter-widgets/* module (controls, base, ...) takes its font URLs from its
    // own module path, so map the whole scope, not only the HTML manager's folder.
    window.require.config({ paths: {
      "@jupyter-widgets/html-manager/dist": root + "_static/html-manager",
      "@jupyter-widgets": root + "_static/html-manager",
    } });
  }
  function shimMathJax2() {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {
        Queue: function (cmd) {
          var el = Array.isArray(cmd) ? cmd[2] : undefined;
          if (window.MathJax && window.MathJax.typesetPromise) {
            window.MathJax.typesetPromise(el ? [el] : undefined).catch(function () {});
          }
        },
      };
    }
  }
  shimMathJax2();  // in case MathJax 3 is already loaded
  document.addEventListener("DOMContentLoaded", shimMathJax2);  // after the deferred MathJax 3 replaced window.MathJax
})();
