/* The report page: routes between the overview and the neuron browser, draws figures when seen. */
(function () {
  "use strict";
  var overview = document.getElementById("overview");
  var neurons = document.getElementById("neurons-view");
  var links = document.querySelectorAll(".txr-bar nav a");
  var figuresDrawn = false;

  // plotly.js (the shared file beside the report) loads when a figure is first shown: a link to a
  // neuron opens without it.
  var plotlyLoading = null;
  function loadPlotly() {
    var src = document.body.getAttribute("data-plotly-src");
    if (typeof Plotly !== "undefined" || !src) return Promise.resolve();
    if (plotlyLoading) return plotlyLoading;
    return plotlyLoading = new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = function () { reject(new Error("cannot load " + src + ": it belongs beside this report")); };
      document.head.appendChild(script);
    });
  }

  function drawFigures() {
    if (figuresDrawn) return;
    figuresDrawn = true;
    loadPlotly().then(function () {
      document.body.setAttribute("data-plotly-ms", String(Math.round(performance.now())));
      drawEach();
    }, function (err) {
      document.querySelectorAll(".figure .plotly-graph-div").forEach(function (div) {
        div.textContent = "No figure: " + err.message + ".";
      });
      throw err;
    });
  }

  function drawEach() {
    // One figure per task, so that the page answers while they draw.
    var specs = Array.prototype.slice.call(document.querySelectorAll("script.txray-figure"));
    (function next() {
      var spec = specs.shift();
      if (!spec) {
        document.body.setAttribute("data-figures-ms", String(Math.round(performance.now())));
        document.body.setAttribute("data-figures-drawn", "true");
        return;
      }
      var div = document.getElementById("fig-" + spec.getAttribute("data-name"));
      TxrayBrowser.decode(spec.textContent).then(function (fig) {
        return Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
      }).then(function () {
        if (!document.body.hasAttribute("data-first-figure-ms")) document.body.setAttribute("data-first-figure-ms", String(Math.round(performance.now())));
        // A click on a point that names a neuron opens it in the browser.
        div.on("plotly_click", function (event) {
          var point = event.points && event.points[0];
          var neuron = point && point.data.meta && point.data.meta.neuron_from;
          if (neuron === "customdata0" && Array.isArray(point.customdata)) location.hash = "neuron=" + point.customdata[0];
          else if (neuron === "customdata" && point.customdata !== undefined) location.hash = "neuron=" + point.customdata;
        });
        setTimeout(next, 0);
      });
    })();
  }

  function setView(view) {
    overview.hidden = view !== "overview";
    neurons.hidden = view === "overview";
    links.forEach(function (a) {
      if (a.getAttribute("data-view") === (view === "overview" ? "overview" : "neurons")) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    document.body.setAttribute("data-view", view);
    if (view === "overview" && browser) drawFigures();  // after the browser is ready: it comes first
  }

  var browser = null;
  function route() {
    if (browser && browser.route(location.hash)) return;
    if (!browser && /^#neuron/.test(location.hash)) return;  // the browser routes it once its data is read
    if (!browser) loadPlotly().catch(function () {});  // while the browser's data is read; errors show later
    setView("overview");
    var target = location.hash.length > 1 && document.getElementById(location.hash.slice(1));
    if (target) target.scrollIntoView();
  }
  window.addEventListener("hashchange", route);
  route();
  TxrayBrowser.readEmbedded("txray-browser-data").then(function (data) {
    browser = TxrayBrowser.mount(document.getElementById("neuron-browser"), data, {
      onView: function (view) { setView(view === "list" ? "neurons" : "neuron"); },
    });
    route();
    document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));  // since navigation started
    document.body.setAttribute("data-ready", "true");
  });
})();
