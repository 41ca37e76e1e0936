/* The report page: routes between the overview and the neuron browser, draws figures when seen. */
(function () {
  "use strict";
  var overview = document.getElementById("overview");
  var neurons = document.getElementById("neurons-view");
  var links = document.querySelectorAll(".txr-bar nav a");
  var figuresDrawn = false;

  // plotly.js loads in the page's head (window.txrayLoadPlotly) unless inlined or the link opens a neuron.
  function loadPlotly() {
    if (typeof Plotly !== "undefined" || !window.txrayLoadPlotly) return Promise.resolve();
    return window.txrayLoadPlotly();
  }

  // The page's own clock (since navigation started): Performance API marks, and body attributes for tests.
  function mark(name, attribute) {
    if (document.body.hasAttribute(attribute)) return;  // the first time only
    performance.mark("txray:" + name);
    document.body.setAttribute(attribute, String(Math.round(performance.now())));
  }

  function drawFigures() {
    if (figuresDrawn) return;
    figuresDrawn = true;
    loadPlotly().then(function () {
      mark("plotly", "data-plotly-ms");
      drawEach();
    }, function (err) {
      document.querySelectorAll(".figure .plotly-graph-div").forEach(function (div) {
        div.textContent = "No figure: " + err.message + ".";
      });
      throw err;
    });
  }

  function inView(spec) {
    var box = document.getElementById("fig-" + spec.getAttribute("data-name")).getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  }

  function drawEach() {
    // One figure per task, so that the page answers while they draw; those in view first.
    var specs = Array.prototype.slice.call(document.querySelectorAll("script.txray-figure"));
    specs = specs.filter(inView).concat(specs.filter(function (s) { return !inView(s); }));
    (function next() {
      var spec = specs.shift();
      if (!spec) {
        mark("figures", "data-figures-ms");
        document.body.setAttribute("data-figures-drawn", "true");
        return;
      }
      var div = document.getElementById("fig-" + spec.getAttribute("data-name"));
      TxrayBrowser.decode(spec.textContent).then(function (fig) {
        return Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
      }).then(function () {
        mark("first-figure", "data-first-figure-ms");
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
    mark("ready", "data-ready-ms");
    document.body.setAttribute("data-ready", "true");
  });
})();
