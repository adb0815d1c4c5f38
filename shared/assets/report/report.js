// The report page: asks GET /v1/reports/ads on this origin with the pasted API key and
// shows the answer. Every amount is shown exactly as the JSON gives it (a decimal string
// in the account's currency): nothing is re-computed or re-rounded here, so the page and
// the JSON agree to the cent. Numbers are parsed only to draw the charts and to sort.
//
// The key lives only in this tab's sessionStorage: never in localStorage, a cookie or a
// URL (its input has no name, so no form submission can carry it either).
(function () {
  "use strict";

  var KEY_STORAGE = "ctwa.report.apiKey";
  var LEVELS = {
    campaign: { id: "campaign_id", title: "Per campaign", names: [["campaign", "Campaign"]] },
    adset: { id: "adset_id", title: "Per ad set", names: [["campaign", "Campaign"], ["adset", "Ad set"]] },
    ad: { id: "ad_id", title: "Per ad", names: [["campaign", "Campaign"], ["adset", "Ad set"], ["ad", "Ad"]] }
  };
  // Totals, in display order: [field, label, kind]. kind: money (account currency),
  // count, ratio (ROAS).
  var TOTALS = [
    ["spend", "Spend", "money", "primary"],
    ["revenue", "Revenue", "money", "primary"],
    ["roas", "ROAS", "ratio", "primary"],
    ["conversations", "Conversations", "count", "primary"],
    ["leads", "Leads", "count", "primary"],
    ["purchases", "Purchases", "count", "primary"],
    ["cost_per_conversation", "Cost per conversation", "money"],
    ["cost_per_lead", "Cost per lead", "money"],
    ["cost_per_purchase", "Cost per purchase", "money"],
    ["impressions", "Impressions", "count"],
    ["meta_clicks", "Clicks (Meta)", "count"],
    ["meta_conversations", "Conversations (Meta)", "count"],
    ["clicks", "Clicks captured", "count"],
    ["clicks_with_clid", "with ctwa_clid", "count"],
    ["clicks_without_clid", "without ctwa_clid", "count"]
  ];
  // Table metric columns: [field, label, kind].
  var COLUMNS = [
    ["spend", "Spend", "money"],
    ["impressions", "Impr.", "count"],
    ["meta_clicks", "Meta clicks", "count"],
    ["meta_conversations", "Meta conv.", "count"],
    ["clicks", "Clicks", "count"],
    ["conversations", "Conv.", "count"],
    ["leads", "Leads", "count"],
    ["purchases", "Purch.", "count"],
    ["revenue", "Revenue", "money"],
    ["cost_per_conversation", "Cost/conv.", "money"],
    ["cost_per_lead", "Cost/lead", "money"],
    ["cost_per_purchase", "Cost/purch.", "money"],
    ["roas", "ROAS", "ratio"]
  ];
  var NONE = "\u2014";

  var state = { data: null, rows: [], sort: null, charts: [] };

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
      });
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A value as the JSON gave it; null (nothing to divide by) as a dash.
  function shown(v) {
    return v === null || v === undefined ? NONE : String(v);
  }

  function setState(s) {
    document.body.dataset.state = s;
  }

  function showError(message) {
    var box = $("error");
    box.textContent = message;
    box.hidden = false;
    $("report").hidden = true;
    $("status").textContent = "";
    setState("error");
  }

  function clearError() {
    var box = $("error");
    box.textContent = "";
    box.hidden = true;
  }

  // yyyy-mm-dd of a local date.
  function isoDate(d) {
    var m = String(d.getMonth() + 1).padStart(2, "0");
    var day = String(d.getDate()).padStart(2, "0");
    return d.getFullYear() + "-" + m + "-" + day;
  }

  // The last 30 days through yesterday.
  function defaultRange() {
    var until = new Date();
    until.setDate(until.getDate() - 1);
    var since = new Date(until.getTime());
    since.setDate(since.getDate() - 29);
    return { since: isoDate(since), until: isoDate(until) };
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      sessionStorage.setItem(KEY_STORAGE, key);
    } catch (e) {
      // Storage refused (private mode quota): the key still works for this load.
    }
  }

  function forgetKey() {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      // nothing stored
    }
    $("api-key").value = "";
    $("status").textContent = "The key is forgotten.";
  }

  function errorMessage(body, status) {
    if (body && body.error && typeof body.error.message === "string" && body.error.message) {
      return body.error.message;
    }
    return "HTTP " + status;
  }

  function load(event) {
    event.preventDefault();
    clearError();
    var key = $("api-key").value.trim();
    if (!key) {
      showError("Paste an API key first.");
      return;
    }
    var since = $("since").value;
    var until = $("until").value;
    if (!since || !until) {
      showError("Pick both dates.");
      return;
    }
    if (since > until) {
      showError("The start date is after the end date.");
      return;
    }
    storeKey(key);
    var query = new URLSearchParams({ since: since, until: until, level: $("level").value });
    var account = $("ad-account").value.trim();
    if (account) query.set("ad_account_id", account);

    setState("loading");
    $("status").textContent = "Loading\u2026";
    $("load").disabled = true;
    fetch("v1/reports/ads?" + query.toString(), {
      headers: { Authorization: "Bearer " + key, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer"
    })
      .then(
        function (response) {
          return response.text().then(function (text) {
            var body = null;
            try {
              body = JSON.parse(text);
            } catch (e) {
              body = null;
            }
            answered(response.status, response.ok, body);
          });
        },
        function (err) {
          showError(
            "Could not reach the server (" + (err && err.message ? err.message : "network error") +
              "). Check the connection and try again."
          );
        }
      )
      .catch(function (err) {
        showError("The report could not be shown: " + (err && err.message ? err.message : err));
      })
      .then(function () {
        $("load").disabled = false;
      });
  }

  function answered(status, ok, body) {
    if (status === 401 || status === 403) {
      showError(
        "The API key was refused: " + errorMessage(body, status) +
          ". Check the key and paste it again."
      );
      return;
    }
    if (!ok) {
      showError("The report could not be loaded (HTTP " + status + "): " + errorMessage(body, status));
      return;
    }
    if (!body || typeof body !== "object" || !body.totals || !Array.isArray(body.rows) ||
        !Array.isArray(body.daily) || !LEVELS[body.level]) {
      showError("The server's answer is not a report (HTTP " + status + ").");
      return;
    }
    render(body);
    $("status").textContent = "";
    setState("loaded");
  }

  // One value as page text, tagged for reading back: data-scope (report, totals, row,
  // daily, other), data-field, and the row id / date / currency it belongs to.
  function valueSpan(scope, field, value, extra) {
    var attrs = { "data-scope": scope, "data-field": field };
    if (extra) Object.keys(extra).forEach(function (k) { attrs[k] = extra[k]; });
    var span = el("span", attrs, shown(value));
    if (value === null || value === undefined) span.className = "none";
    return span;
  }

  function render(data) {
    state.data = data;
    state.sort = null;
    $("report").hidden = false;

    document.querySelectorAll('[data-scope="report"]').forEach(function (e) {
      e.textContent = shown(data[e.dataset.field]);
    });

    $("truncated").hidden = data.truncated !== true;
    renderTotals(data);
    renderOther(data);
    renderTable(data);
    renderDaily(data);
    renderCharts(data);
  }

  function renderTotals(data) {
    var box = $("totals");
    box.textContent = "";
    TOTALS.forEach(function (t) {
      var card = el("div", { class: "total" + (t[3] ? " " + t[3] : "") });
      card.appendChild(el("div", { class: "label" }, t[1]));
      var v = el("div", { class: "value" });
      v.appendChild(valueSpan("totals", t[0], data.totals[t[0]]));
      if (t[2] === "money" && data.totals[t[0]] !== null) {
        v.appendChild(document.createTextNode(" "));
        v.appendChild(el("span", { class: "cur" }, data.currency));
      }
      card.appendChild(v);
      box.appendChild(card);
    });
  }

  function renderOther(data) {
    var list = $("other-list");
    list.textContent = "";
    var other = Array.isArray(data.other_currencies) ? data.other_currencies : [];
    $("other-currencies").hidden = other.length === 0;
    other.forEach(function (o) {
      var li = el("li", { "data-currency": o.currency });
      li.appendChild(valueSpan("other", "revenue", o.revenue, { "data-currency": o.currency }));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", { class: "cur" }, o.currency));
      li.appendChild(document.createTextNode(" from "));
      li.appendChild(valueSpan("other", "purchases", o.purchases, { "data-currency": o.currency }));
      li.appendChild(document.createTextNode(o.purchases === 1 ? " purchase" : " purchases"));
      list.appendChild(li);
    });
  }

  function rowId(level, row) {
    return String(row[LEVELS[level].id]);
  }

  function renderTable(data) {
    var level = LEVELS[data.level];
    $("rows-title").textContent = level.title + " (amounts in " + data.currency + ")";
    var head = $("rows-head");
    head.textContent = "";
    level.names.forEach(function (n) {
      head.appendChild(headerCell(n[0] + "_name", n[1], "text"));
    });
    COLUMNS.forEach(function (c) {
      var th = headerCell(c[0], c[1], c[2]);
      var full = TOTALS.filter(function (t) { return t[0] === c[0]; })[0];
      th.title = (full ? full[1] : c[1]) + (c[2] === "money" ? " (" + data.currency + ")" : "");
      head.appendChild(th);
    });
    head.appendChild(el("th", { scope: "col", class: "num", title: "Revenue in other currencies (never added)" }, "Other"));
    state.rows = data.rows.map(function (row, index) {
      return { row: row, index: index };
    });
    $("rows-empty").hidden = data.rows.length > 0;
    drawRows();
  }

  function headerCell(field, label, kind) {
    var th = el("th", { scope: "col", "data-key": field, class: kind === "text" ? "" : "num" });
    var button = el("button", { type: "button", "data-sort": field, "data-kind": kind }, label);
    button.addEventListener("click", function () {
      sortBy(field, kind);
    });
    th.appendChild(button);
    return th;
  }

  function drawRows() {
    var data = state.data;
    var level = LEVELS[data.level];
    var body = $("rows-body");
    body.textContent = "";
    state.rows.forEach(function (entry) {
      var row = entry.row;
      var id = rowId(data.level, row);
      var tr = el("tr", { "data-row": id });
      level.names.forEach(function (n) {
        var name = row[n[0] + "_name"];
        var entityId = row[n[0] + "_id"];
        var td = el("td", {
          "data-scope": "row",
          "data-row": id,
          "data-field": n[0] + "_name",
          title: entityId,
          class: name === null || name === undefined ? "id" : "name"
        }, name === null || name === undefined ? shown(entityId) : String(name));
        tr.appendChild(td);
      });
      COLUMNS.forEach(function (c) {
        var td = el("td", {
          "data-scope": "row",
          "data-row": id,
          "data-field": c[0],
          class: "num" + (row[c[0]] === null || row[c[0]] === undefined ? " none" : "")
        }, shown(row[c[0]]));
        tr.appendChild(td);
      });
      var other = el("td", { class: "num other-cell" });
      var map = row.revenue_other_currencies || {};
      Object.keys(map).sort().forEach(function (cur, i) {
        if (i > 0) other.appendChild(el("br"));
        other.appendChild(valueSpan("row", "revenue_other_currencies." + cur, map[cur], { "data-row": id }));
        other.appendChild(document.createTextNode(" "));
        other.appendChild(el("span", { class: "cur" }, cur));
      });
      tr.appendChild(other);
      body.appendChild(tr);
    });
    document.querySelectorAll("#rows-head th[data-key]").forEach(function (th) {
      if (state.sort && th.dataset.key === state.sort.field) {
        th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
  }

  // Numbers from the JSON's strings, for ordering only (never shown).
  function sortValue(v, kind) {
    if (v === null || v === undefined) return null;
    if (kind === "text") return String(v).toLowerCase();
    var n = Number(v);
    return isNaN(n) ? null : n;
  }

  // First click: numbers largest first, names A to Z; a second click reverses.
  // Nulls (nothing to divide by) stay last either way.
  function sortBy(field, kind) {
    var dir = kind === "text" ? 1 : -1;
    if (state.sort && state.sort.field === field) dir = -state.sort.dir;
    state.sort = { field: field, dir: dir };
    var idField = field.replace(/_name$/, "_id");
    state.rows.sort(function (a, b) {
      var va = sortValue(field.slice(-5) === "_name" ? (a.row[field] || a.row[idField]) : a.row[field], kind);
      var vb = sortValue(field.slice(-5) === "_name" ? (b.row[field] || b.row[idField]) : b.row[field], kind);
      if (va === null && vb === null) return a.index - b.index;
      if (va === null) return 1;
      if (vb === null) return -1;
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return (a.index - b.index) * dir;
    });
    drawRows();
  }

  function renderDaily(data) {
    var body = $("daily-body");
    body.textContent = "";
    data.daily.forEach(function (d) {
      var tr = el("tr", { "data-date": d.date });
      tr.appendChild(el("td", { "data-scope": "daily", "data-date": d.date, "data-field": "date" }, shown(d.date)));
      ["spend", "revenue", "clicks", "conversations", "leads", "purchases"].forEach(function (f) {
        tr.appendChild(el("td", { class: "num", "data-scope": "daily", "data-date": d.date, "data-field": f }, shown(d[f])));
      });
      body.appendChild(tr);
    });
  }

  function chartWidth(box) {
    return Math.max(280, Math.floor(box.getBoundingClientRect().width));
  }

  // Midnight UTC of a yyyy-mm-dd, in seconds (uPlot's time unit).
  function dayStamp(date) {
    var p = date.split("-");
    return Date.UTC(Number(p[0]), Number(p[1]) - 1, Number(p[2])) / 1000;
  }

  function fromZero(u, min, max) {
    return [0, max > 0 ? max * 1.1 : 1];
  }

  function renderCharts(data) {
    state.charts.forEach(function (c) {
      c.destroy();
    });
    state.charts = [];
    var dailyBox = $("daily-chart");
    var funnelBox = $("funnel-chart");
    dailyBox.textContent = "";
    funnelBox.textContent = "";
    if (typeof window.uPlot !== "function") {
      dailyBox.textContent = "The chart library did not load.";
      funnelBox.textContent = "The chart library did not load.";
      return;
    }
    var uPlot = window.uPlot;
    var daily = data.daily;
    var cur = data.currency;
    var pick = function (field) {
      return function (u, v, si, i) {
        return i === null || i === undefined || !daily[i] ? NONE : shown(daily[i][field]) + " " + cur;
      };
    };
    var dailyChart = new uPlot(
      {
        width: chartWidth(dailyBox),
        height: 260,
        tzDate: function (ts) {
          return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
        },
        scales: { x: { time: true }, y: { range: fromZero } },
        series: [
          {
            label: "Day",
            value: function (u, v, si, i) {
              return i === null || i === undefined || !daily[i] ? NONE : daily[i].date;
            }
          },
          { label: "Spend", stroke: "#c2410c", width: 2, value: pick("spend") },
          { label: "Revenue", stroke: "#15803d", fill: "rgba(21,128,61,0.10)", width: 2, value: pick("revenue") }
        ],
        axes: [{}, { size: 70 }]
      },
      [
        daily.map(function (d) { return dayStamp(d.date); }),
        daily.map(function (d) { return Number(d.spend); }),
        daily.map(function (d) { return Number(d.revenue); })
      ],
      dailyBox
    );
    state.charts.push(dailyChart);

    var steps = [["clicks", "Clicks"], ["conversations", "Conversations"], ["leads", "Leads"], ["purchases", "Purchases"]];
    var funnelChart = new uPlot(
      {
        width: chartWidth(funnelBox),
        height: 260,
        scales: { x: { time: false, range: [-0.5, steps.length - 0.5] }, y: { range: fromZero } },
        series: [
          {
            label: "Step",
            value: function (u, v, si, i) {
              return i === null || i === undefined || !steps[i] ? NONE : steps[i][1];
            }
          },
          {
            label: "Count",
            stroke: "#1d4ed8",
            fill: "rgba(29,78,216,0.75)",
            width: 1,
            paths: uPlot.paths.bars({ size: [0.6, 120] }),
            points: { show: false },
            value: function (u, v, si, i) {
              return i === null || i === undefined || !steps[i] ? NONE : shown(data.totals[steps[i][0]]);
            }
          }
        ],
        axes: [
          {
            splits: function () {
              return steps.map(function (s, i) { return i; });
            },
            values: function (u, splits) {
              return splits.map(function (i) { return steps[i] ? steps[i][1] : ""; });
            },
            grid: { show: false }
          },
          { size: 60 }
        ]
      },
      [
        steps.map(function (s, i) { return i; }),
        steps.map(function (s) { return Number(data.totals[s[0]]) || 0; })
      ],
      funnelBox
    );
    state.charts.push(funnelChart);
  }

  var resizeTimer = null;
  function onResize() {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      var boxes = [$("daily-chart"), $("funnel-chart")];
      state.charts.forEach(function (c, i) {
        c.setSize({ width: chartWidth(boxes[i]), height: 260 });
      });
    }, 150);
  }

  function init() {
    var range = defaultRange();
    $("since").value = range.since;
    $("until").value = range.until;
    $("level").value = "campaign";
    $("api-key").value = storedKey();
    $("params").addEventListener("submit", load);
    $("forget-key").addEventListener("click", forgetKey);
    window.addEventListener("resize", onResize);
    setState("idle");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
