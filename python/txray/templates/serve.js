/* txray serve: the analysis, manipulation and ablation views around the neuron browser (browser.js).
 * The browser reads its table from /api/browser and each neuron's page from /api/neuron/N (loadNeuron).
 * Routes: "#neurons" and "#neuron=N" (the browser, in the analysis view), "#manipulate", "#ablation".
 * Every failed request shows the server's message in the view it came from. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("txs-config").textContent);
  var selected = [];
  var browser = null;
  var views = ["analysis", "manipulate", "ablation"];

  function $(id) { return document.getElementById(id); }
  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toPrecision(digits || 3); }

  // A JSON request; rejects with the server's message (its "error" field) on a failure.
  function api(path, body) {
    var init = body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
    return fetch(path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!resp.ok) throw new Error((data && data.error) || ("the server answered " + resp.status));
        return data;
      });
    });
  }
  function showError(id, err) {
    var box = $(id);
    if (!err) { box.hidden = true; box.textContent = ""; return; }
    box.hidden = false;
    box.textContent = err.message || String(err);
  }

  // -- selected neurons ---------------------------------------------------------------------------
  function drawSelection() {
    $("txs-chips").innerHTML = selected.length ? selected.map(function (n) {
      return "<span class='txs-chip' data-neuron='" + n + "' title='remove neuron " + n + "'>" + n + " ×</span>";
    }).join(" ") : "<span class='txs-note'>none (open a neuron and select it, or type ids)</span>";
    var m = /^#neuron=(\d+)$/.exec(location.hash);
    var here = $("txs-select-this");
    here.hidden = !m;
    if (m) {
      var n = Number(m[1]), on = selected.indexOf(n) >= 0;
      here.textContent = on ? "unselect neuron " + n : "select neuron " + n;
      here.setAttribute("data-neuron", String(n));
    }
    drawEdits();
  }
  function toggle(n) {
    var at = selected.indexOf(n);
    if (at >= 0) selected.splice(at, 1);
    else if (selected.length < config.limits.neurons && n >= 0 && n < config.n_neurons) selected.push(n);
    drawSelection();
  }
  $("txs-chips").addEventListener("click", function (e) {
    var n = e.target.getAttribute && e.target.getAttribute("data-neuron");
    if (n !== null) toggle(Number(n));
  });
  $("txs-select-this").addEventListener("click", function () { toggle(Number(this.getAttribute("data-neuron"))); });
  $("txs-clear").addEventListener("click", function () { selected = []; drawSelection(); });
  $("txs-add").addEventListener("change", function () {
    this.value.split(/[\s,]+/).forEach(function (t) {
      if (/^\d+$/.test(t) && selected.indexOf(Number(t)) < 0) toggle(Number(t));
    });
    this.value = "";
  });

  // -- views and routes ----------------------------------------------------------------------------
  function setView(view) {
    views.forEach(function (v) { $("view-" + v).hidden = v !== view; });
    document.querySelectorAll(".txs-bar nav a").forEach(function (a) {
      if (a.getAttribute("data-view") === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    document.body.setAttribute("data-view", view);
  }
  function route() {
    drawSelection();
    var hash = location.hash;
    if (hash === "#manipulate") return setView("manipulate");
    if (hash === "#ablation") { setView("ablation"); return loadFiles(); }
    if (browser && browser.route(hash || "#neurons")) return;
    setView("analysis");
  }
  window.addEventListener("hashchange", route);

  function fillModels(select, filter) {
    var models = config.models.filter(filter || function () { return true; });
    select.innerHTML = models.map(function (m) {
      return "<option value='" + esc(m.name) + "'>" + esc(m.name) + " (" + esc(m.layer) + ", " + esc(m.kind) + ")</option>";
    }).join("");
    return models.length;
  }

  // -- analysis: activations over a text --------------------------------------------------------------
  if (fillModels($("act-model"))) $("txs-text-panel").hidden = false;
  $("act-run").addEventListener("click", function () {
    showError("act-error", null);
    if (!selected.length) return showError("act-error", new Error("Select one or more neurons first."));
    api("/api/activations", { model: $("act-model").value, text: $("act-text").value, neurons: selected }).then(function (r) {
      var rows = r.neurons.map(function (n, i) {
        var acts = r.activations[i];
        var top = Math.max.apply(null, acts.map(Math.abs)) || 1;
        var cells = r.words.map(function (w, j) {
          var a = acts[j], alpha = (Math.abs(a) / top).toFixed(2);
          var color = a >= 0 ? "rgba(255, 140, 0, " + alpha + ")" : "rgba(31, 95, 191, " + alpha + ")";
          return "<span class='txs-word' style='background:" + color + "' title='" + esc(w) + ": " + num(a) + "'>" + esc(w) + "</span>";
        }).join("");
        return "<tr><th><a href='#neuron=" + n + "'>neuron " + n + "</a></th><td>" + cells + "</td></tr>";
      }).join("");
      $("act-map").innerHTML = "<table data-words='" + r.words.length + "'>" + rows + "</table>" +
        "<p class='txs-note'>Orange: positive, blue: negative; each neuron's row is scaled to its largest activation on this text." +
        (r.cut ? " The text was cut to what the model reads." : "") + "</p>";
    }).catch(function (err) { showError("act-error", err); });
  });

  // -- manipulation ----------------------------------------------------------------------------------------
  var edits = {};  // neuron -> {mode, value}
  function drawEdits() {
    var body = $("man-edits");
    body.innerHTML = selected.map(function (n) {
      var e = edits[n] || (edits[n] = { mode: "set", value: 0 });
      return "<tr data-neuron='" + n + "'><td>" + n + "</td><td><select data-field='mode' aria-label='how to set neuron " + n + "'>" +
        ["set", "zero", "scale"].map(function (m) { return "<option" + (m === e.mode ? " selected" : "") + ">" + m + "</option>"; }).join("") +
        "</select></td><td><input type='number' step='any' data-field='value' aria-label='value for neuron " + n + "' value='" + e.value + "'" +
        (e.mode === "zero" ? " disabled" : "") + "></td></tr>";
    }).join("");
    $("man-empty").hidden = selected.length > 0;
  }
  $("man-edits").addEventListener("change", function (e) {
    var row = e.target.closest("tr"), n = Number(row.getAttribute("data-neuron"));
    var field = e.target.getAttribute("data-field");
    edits[n][field] = field === "value" ? Number(e.target.value) : e.target.value;
    if (field === "mode") drawEdits();
  });
  function outputTable(rows, kind) {
    var top = Math.max.apply(null, rows.map(function (r) { return Math.abs(r[1]); })) || 1;
    return "<table class='txs-out'><tbody>" + rows.map(function (r) {
      var delta = r[1] - r[2], cls = delta > 0 ? "txs-up" : delta < 0 ? "txs-down" : "";
      return "<tr><td class='txs-label' title='" + esc(r[0]) + "'>" + esc(r[0]) + "</td><td class='txs-bar-cell' style='width:40%'><div style='width:" +
        (100 * Math.abs(r[1]) / top).toFixed(1) + "%'></div></td><td>" + num(r[1]) + "</td><td class='" + cls + "' title='the other side'>(" + num(r[2]) + ")</td></tr>";
    }).join("") + "</tbody></table>";
  }
  if (!fillModels($("man-model"))) { $("man-none").hidden = false; $("man-form").hidden = true; }
  $("man-run").addEventListener("click", function () {
    showError("man-error", null);
    if (!selected.length) return showError("man-error", new Error("Select one or more neurons first."));
    var list = selected.map(function (n) { return { neuron: n, mode: edits[n].mode, value: edits[n].value }; });
    var started = performance.now();
    api("/api/manipulate", { model: $("man-model").value, text: $("man-text").value, edits: list }).then(function (r) {
      var what = { "next word": "next word", "masked word": "masked word after the text", "class": "class probabilities", "embedding": "pooled output (largest dimensions)" }[r.kind] || r.kind;
      $("man-result").innerHTML = "<div data-side='before'><h3>Before: " + esc(what) + "</h3>" + outputTable(r.before) + "</div>" +
        "<div data-side='after'><h3>After</h3>" + outputTable(r.after) + "</div>" +
        "<p class='txs-note' id='man-distance'>" + (r.kind === "embedding" ? "Euclidean distance " : "Total variation distance ") + num(r.distance) +
        " between before and after; in brackets: the other side's value. " + Math.round(performance.now() - started) + " ms.</p>";
      document.body.setAttribute("data-manipulated", String(Number(document.body.getAttribute("data-manipulated") || 0) + 1));
    }).catch(function (err) { showError("man-error", err); });
  });

  // -- ablation -------------------------------------------------------------------------------------------
  var filesLoaded = false;
  if (!fillModels($("abl-model"), function (m) { return m.kind === "class"; })) { $("abl-none").hidden = false; $("abl-form").hidden = true; }
  $("abl-stage").innerHTML = config.stages.map(function (s, i) { return "<option value='" + i + "'" + (i === config.stages.length - 1 ? " selected" : "") + ">" + esc(s) + "</option>"; }).join("");
  $("abl-before").innerHTML = "<option value=''>none (no avoided / gained sets)</option>" + config.stages.map(function (s, i) {
    return "<option value='" + i + "'" + (i === config.stages.length - 2 ? " selected" : "") + ">" + esc(s) + "</option>";
  }).join("");
  function loadFiles() {
    if (filesLoaded || $("abl-form").hidden) return;
    filesLoaded = true;
    api("/api/files").then(function (r) {
      $("abl-file").innerHTML = r.files.map(function (f) { return "<option" + (f === r.default ? " selected" : "") + ">" + esc(f) + "</option>"; }).join("");
    }).catch(function (err) { showError("abl-error", err); });
  }
  function ablationResult(job) {
    var rows = job.table, base = rows[0].metric_file;
    var head = "<tr><th>set</th><th>neurons</th><th>mass removed</th><th>accuracy</th><th>change</th></tr>";
    var body = rows.map(function (r) {
      return "<tr><td>" + esc(r.set) + "</td><td>" + r.neurons + "</td><td>" + (r.mass_removed === null ? "–" : (100 * r.mass_removed).toFixed(2) + "%") +
        "</td><td>" + r.metric_file.toFixed(4) + "</td><td>" + (r.change_file === null ? "–" : (100 * r.change_file).toFixed(2) + "%") + "</td></tr>";
    }).join("");
    var span = Math.max.apply(null, rows.map(function (r) { return Math.abs(r.change_file || 0); })) || 1;
    var figure = rows.slice(1).map(function (r) {
      var c = r.change_file || 0, w = 50 * Math.abs(c) / span;
      var left = c < 0 ? 50 - w : 50;
      return "<span>" + esc(r.set) + "</span><div class='txs-axis'><div class='txs-zero' style='left:50%'></div><div style='left:" + left + "%;width:" + w +
        "%;background:" + (c < 0 ? "#c0392b" : "#2a9d8f") + "'></div></div><span>" + (100 * c).toFixed(2) + "%</span>";
    }).join("");
    $("abl-result").innerHTML = "<table class='txs-table'>" + head + body + "</table>" +
      "<h3>Relative change of the accuracy (baseline " + base.toFixed(4) + ")</h3><div class='txs-figure' data-figure='pruning'>" + figure + "</div>";
  }
  function poll(id) {
    api("/api/ablation/" + id).then(function (job) {
      $("abl-progress").value = job.progress;
      $("abl-status").textContent = job.done + " of " + job.total + " evaluations";
      if (job.status === "running") return setTimeout(function () { poll(id); }, 300);
      $("abl-progress").hidden = true;
      if (job.status === "error") return showError("abl-error", new Error(job.error));
      $("abl-status").textContent = "done: " + job.total + " evaluations";
      ablationResult(job);
    }).catch(function (err) { showError("abl-error", err); });
  }
  $("abl-run").addEventListener("click", function () {
    showError("abl-error", null);
    var before = $("abl-before").value;
    var body = { model: $("abl-model").value, file: $("abl-file").value, stage: Number($("abl-stage").value),
      before: before === "" ? null : Number(before), k: Number($("abl-k").value), rows: Number($("abl-rows").value), sets: {} };
    if ($("abl-selected").checked && selected.length) body.sets["selected (" + selected.join(", ") + ")"] = selected.slice();
    api("/api/ablation", body).then(function (job) {
      $("abl-progress").hidden = false;
      $("abl-result").innerHTML = "";
      if (job.status === "done") { $("abl-progress").hidden = true; return ablationResult(job); }
      poll(job.id);
    }).catch(function (err) { showError("abl-error", err); });
  });

  // -- start ------------------------------------------------------------------------------------------------
  route();
  api("/api/browser").then(function (doc) {
    browser = TxrayBrowser.mount($("neuron-browser"), doc, {
      loadNeuron: function (n) { return api("/api/neuron/" + n).catch(function (err) { return null; }); },
      onView: function () { setView("analysis"); drawSelection(); },
    });
    route();
    document.body.setAttribute("data-ready", "true");
  }).catch(function (err) {
    $("neuron-browser").innerHTML = "<div class='txs-error' role='alert'>" + esc(err.message) + "</div>";
    document.body.setAttribute("data-ready", "true");
  });
})();
