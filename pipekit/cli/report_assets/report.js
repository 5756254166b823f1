(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var pageSize = 100, page = 0, shown = data.rows;
  var matrix = document.getElementById("matrix"), timeline = document.getElementById("timeline");
  var filter = document.getElementById("filter"), only = document.getElementById("only");
  var info = document.getElementById("pageinfo");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function stamp(t) { return new Date(t * 1000).toISOString().substr(11, 8); }
  function elapsed(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  function axis(t0, t1, span) {
    var line = el("div", "tl-row tl-axis");
    line.appendChild(el("div", "tl-id", "UTC (elapsed)"));
    var lane = el("div", "tl-lane tl-ticks");
    for (var k = 0; k < 6; k++) {
      var t = t0 + (t1 - t0) * k / 5;
      var tick = el("span", "tick", stamp(t) + " (+" + elapsed(t - t0) + ")");
      tick.style.left = (100 * (t - t0) / span) + "%";
      lane.appendChild(tick);
    }
    line.appendChild(lane);
    return line;
  }
  function apply() {
    var q = filter.value.toLowerCase(), s = only.value;
    shown = data.rows.filter(function (r) {
      return (!q || r[0].toLowerCase().indexOf(q) >= 0) && (!s || r[1] === s);
    });
    page = 0;
    render();
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    if (page >= pages) page = pages - 1;
    var rows = shown.slice(page * pageSize, (page + 1) * pageSize);
    info.textContent = "page " + (page + 1) + " of " + pages + " (" + shown.length + " of " + data.rows.length + " items)";
    var thead = el("tr");
    thead.appendChild(el("th", "", "item"));
    data.phases.forEach(function (p) { var th = el("th", "ph", String(p[0])); th.title = p[1]; thead.appendChild(th); });
    thead.appendChild(el("th", "", "cost"));
    thead.appendChild(el("th", "", "last error"));
    matrix.replaceChildren(thead);
    var t0 = Infinity, t1 = -Infinity;
    rows.forEach(function (r) { r[4].forEach(function (c) {
      if (c[1] !== null) t0 = Math.min(t0, c[1]);
      if (c[2] !== null) t1 = Math.max(t1, c[2]);
      if (c[1] !== null && c[2] === null) t1 = Math.max(t1, c[1]);
    }); });
    var span = (t1 > t0) ? (t1 - t0) : 1;
    timeline.replaceChildren();
    if (t0 <= t1) timeline.appendChild(axis(t0, t1, span));
    var gaps = data.run_gaps.filter(function (g) { return g[0] >= t0 && g[1] <= t1; });
    rows.forEach(function (r) {
      var tr = el("tr", "row-" + r[1]);
      tr.appendChild(el("td", "id", r[0]));
      r[4].forEach(function (c, i) {
        var status = data.statuses[c[0]];
        var td = el("td", "cell");
        var dot = el("span", "dot s-" + status);
        dot.style.background = data.colours[status];
        if (status === "waiting") dot.textContent = "\u29d7";  // the glyph of `status`
        dot.title = data.phases[i][1] + ": " + status + (c[3] ? "\n" + c[3] : "");
        if (c[3]) dot.setAttribute("data-preview", c[3]);
        td.appendChild(dot);
        tr.appendChild(td);
      });
      tr.appendChild(el("td", "n", "$" + r[2].toFixed(4)));
      tr.appendChild(el("td", "note", r[3]));
      matrix.appendChild(tr);
      var line = el("div", "tl-row");
      line.appendChild(el("div", "tl-id", r[0]));
      var lane = el("div", "tl-lane");
      r[4].forEach(function (c, i) {
        var start = c[1], end = c[2], status = data.statuses[c[0]];
        if (start === null && end === null) return;
        if (start === null) start = end;
        if (end === null) end = t1;
        var bar = el("div", "tl-bar s-" + status);
        bar.style.left = (100 * (start - t0) / span) + "%";
        bar.style.width = Math.max(0.4, 100 * (end - start) / span) + "%";
        bar.style.background = data.colours[status];
        bar.title = data.phases[i][0] + " " + data.phases[i][1] + ": " + status + ", " + (end - start).toFixed(2) + "s";
        lane.appendChild(bar);
      });
      gaps.forEach(function (g) {
        var mark = el("div", "tl-run");
        mark.style.left = (100 * ((g[0] + g[1]) / 2 - t0) / span) + "%";
        mark.title = "a run ended at " + stamp(g[0]) + "; the next began at " + stamp(g[1]);
        lane.appendChild(mark);
      });
      line.appendChild(lane);
      timeline.appendChild(line);
    });
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
  }
  document.getElementById("prev").onclick = function () { page--; render(); };
  document.getElementById("next").onclick = function () { page++; render(); };
  filter.oninput = apply;
  only.onchange = apply;
  render();
  document.body.setAttribute("data-rendered", "yes");
})();
