/*
 * ui.js -- maskloss-server's status page: monitors, drift, the server's counters and a form for
 * /v1/loss. Plain JavaScript, no library; served from the binary with a Content-Security-Policy
 * that allows no inline script or style, so everything here builds the DOM by hand (never
 * innerHTML: monitor and class names are the users' text).
 *
 * It only reads: GET /v1/monitors, /v1/monitors/{name}, .../series and /v1/stats, plus the one
 * POST /v1/loss a person sends from "Try it". /v1/stats is polled every few seconds while its
 * view is shown, the monitors less often, nothing while paused or while the tab is hidden.
 *
 * Every figure shown carries data-figure (a stable id), data-src and data-path (where in which
 * answer it comes from) and data-format (one of FMT's rules): tests/ui/run.py reads the same
 * answers and formats them with the same rules, which it keeps in step with FMT below.
 */
'use strict';

(function () {
  const TOKEN_KEY = 'maskloss.token';
  const STATS_EVERY_MS = 3000;
  const MONITORS_EVERY_MS = 15000;
  const MAX_LINES = 8; /* slice values drawn in the chart, besides "all" */
  const MAX_CARDS = 40; /* monitors whose figures the list reads (one call each); the rest by name */
  const COLORS = ['#1b1b1b', '#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9',
    '#8c564b', '#7f7f7f'];
  const EXAMPLE = '{"loss": "sigmoid_cross_entropy", "dtype": "float64",\n' +
    ' "labels": [[1,1,0,0,0],[0,1,1,1,0],[0,0,0,0,1],[1,1,1,1,1]],\n' +
    ' "logits": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9],[0.9,0.9,0.7,0.1,0.0]],\n' +
    ' "mask":   [[1,0,0,0,0],[0,0,1,1,0],[0,0,1,0,1],[0,1,1,1,1]]}\n';
  const BROKEN_EXAMPLE = '{"loss": "sigmoid_cross_entropy", "dtype": "float64",\n' +
    ' "labels": [[1,1,0,0,0],[0,1,1,1,0]],\n' +
    ' "logits": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9]],\n' +
    ' "mask":   [[1,0,0,0,0],[0,0,1,1,0]]}\n';

  /* waiting: the view shows a token prompt or a refusal, and polls no more until answered. */
  let waiting = false;

  /* ---- formatting: the rules tests/ui/run.py repeats (FORMATS there) ---------------------- */

  /* A number to `sig` significant digits: fixed notation from 1e-4 to below 1e6, else
   * exponential; the API's non-finite strings ("NaN", "Infinity") as they are; null as a dash. */
  function num(x, sig) {
    sig = sig || 4;
    if (x === null || x === undefined) return '—';
    if (typeof x === 'string') return x;
    if (Number.isNaN(x)) return 'NaN';
    if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
    if (x === 0) return '0';
    const e = Math.floor(Math.log10(Math.abs(x)));
    if (e < -4 || e >= 6) return x.toExponential(sig - 1);
    return x.toFixed(Math.max(0, sig - 1 - e));
  }

  function int(n) {
    if (n === null || n === undefined) return '—';
    if (typeof n === 'string') return n;
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  /* Seconds, in the unit that keeps them short (latencies, label delays). */
  function dur(x) {
    if (x === null || x === undefined) return '—';
    if (typeof x === 'string') return x;
    if (x === 0) return '0 s';
    if (x < 1e-3) return num(x * 1e6, 3) + ' µs';
    if (x < 1) return num(x * 1e3, 3) + ' ms';
    if (x < 60) return num(x, 3) + ' s';
    if (x < 3600) return num(x / 60, 3) + ' min';
    if (x < 86400) return num(x / 3600, 3) + ' h';
    return num(x / 86400, 3) + ' d';
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return i ? v.toFixed(1) + ' ' + units[i] : int(n) + ' B';
  }

  function uptime(s) {
    if (s === null || s === undefined) return '—';
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return d + ' d ' + h + ' h';
    if (h) return h + ' h ' + m + ' min';
    if (m) return m + ' min ' + sec + ' s';
    return sec + ' s';
  }

  /* Unix seconds as UTC, to the minute: the server's buckets are minutes. */
  function time(t) {
    if (t === null || t === undefined) return '—';
    return new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function signed(x) {
    if (typeof x !== 'number') return num(x);
    return (x > 0 ? '+' : '') + num(x);
  }

  const FMT = {
    num: num,
    int: int,
    dur: dur,
    bytes: bytes,
    uptime: uptime,
    time: time,
    signed: signed,
    /* Weights: whole numbers as counts, others as numbers. */
    weight: function (x) {
      return typeof x === 'number' && Number.isInteger(x) ? int(x) : num(x);
    },
    z: function (x) {
      if (typeof x !== 'number') return num(x);
      return (x > 0 ? '+' : '') + x.toFixed(2);
    },
    pct: function (x) {
      if (typeof x !== 'number') return num(x);
      return (x * 100).toFixed(1) + ' %';
    },
    rate: function (x) {
      if (typeof x !== 'number') return num(x);
      return num(x, 3) + '/s';
    },
    full: function (x) {
      return typeof x === 'number' ? String(x) : num(x);
    },
    bool: function (x) {
      return x === true ? 'yes' : x === false ? 'no' : '—';
    },
    text: function (x) {
      return x === null || x === undefined ? '—' : String(x);
    },
    /* How many distinct classes a drift list names. */
    classes: function (list) {
      if (!Array.isArray(list)) return '—';
      return String(new Set(list.map(function (d) { return JSON.stringify(d.class); })).size);
    },
  };

  /* ---- DOM ----------------------------------------------------------------------------- */

  /* h('tag.class', {attr: value, onclick: fn}, children...): text children become text nodes. */
  function h(spec, attrs) {
    const parts = spec.split('.');
    const tag = parts[0].split('#');
    const el = document.createElement(tag[0]);
    if (tag[1]) el.id = tag[1];
    if (parts.length > 1) el.className = parts.slice(1).join(' ');
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (let i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach(function (x) { append(el, x); });
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs || {}) el.setAttribute(k, attrs[k]);
    for (let i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  /* The value at path in an answer: path segments are keys, indexes, or objects that select
   * the element of an array whose fields equal theirs ({"class": "horror"}). */
  function resolve(doc, path) {
    for (const seg of path) {
      if (doc === null || doc === undefined) return null;
      if (seg !== null && typeof seg === 'object') {
        doc = Array.isArray(doc) ? doc.find(function (x) {
          return Object.keys(seg).every(function (k) { return x[k] === seg[k]; });
        }) : null;
      } else {
        doc = doc[seg];
      }
    }
    return doc === undefined ? null : doc;
  }

  /* A figure: the value at `path` of the answer of `src`, formatted by `format`. */
  function fig(id, src, doc, path, format, tag) {
    const v = resolve(doc, path);
    return h((tag || 'span') + '.fig', {
      'data-figure': id, 'data-src': src, 'data-path': JSON.stringify(path),
      'data-format': format, text: FMT[format](v),
    });
  }

  /* A figure computed here, not read from one answer (requests/s): its value kept beside. */
  function derived(id, value, format) {
    return h('span.fig', {
      'data-figure': id, 'data-format': format, 'data-value': value === null ? '' : String(value),
      text: FMT[format](value),
    });
  }

  function table(cls, head, rows) {
    return h('div.scroll', null, h('table' + (cls ? '.' + cls : ''), null,
      h('thead', null, h('tr', null, head.map(function (c) {
        return typeof c === 'string' ? h('th', {scope: 'col', text: c}) : c;
      }))),
      h('tbody', null, rows)));
  }

  /* ---- errors: a banner for what the page cannot handle in place ------------------------ */

  const banner = {
    messages: [],
    show: function (msg) {
      this.messages.push(msg);
      const box = document.getElementById('banner');
      document.getElementById('banner-text').textContent = msg +
        (this.messages.length > 1 ? ' (' + this.messages.length + ' errors so far)' : '');
      box.hidden = false;
    },
  };
  window.addEventListener('error', function (e) {
    banner.show('JavaScript error: ' + e.message + (e.filename ? ' (' + e.filename.split('/').pop() +
      ':' + e.lineno + ')' : ''));
  });
  window.addEventListener('unhandledrejection', function (e) {
    const r = e.reason;
    banner.show('Unhandled error: ' + (r && r.message ? r.message : String(r)));
  });

  /* An answer other than 2xx: its status and the server's error object. */
  class HttpError extends Error {
    constructor(method, path, status, body, text) {
      const detail = body && body.error ? body.error : text.slice(0, 200);
      super(method + ' ' + path + ': HTTP ' + status + (detail ? ': ' + detail : ''));
      this.status = status;
      this.body = body;
      this.path = path;
    }
  }

  class NetworkError extends Error {}

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null; /* storage disabled: the page works without tokens */
    }
  }

  function setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById('forget-token').hidden = !t;
  }

  /* One call to the server: the parsed JSON of a 2xx answer, else an HttpError (401 and 403
   * are the views' to handle in place); a failed fetch is also shown in the banner. */
  async function api(path, opts) {
    opts = opts || {};
    const method = opts.method || 'GET';
    const headers = {};
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    let resp;
    try {
      resp = await fetch(path, {
        method: method, headers: headers, body: opts.body, cache: 'no-store',
        credentials: 'omit', redirect: 'error',
      });
    } catch (e) {
      const err = new NetworkError(method + ' ' + path + ': the server could not be reached (' +
        e.message + ')');
      banner.show(err.message);
      throw err;
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const err = new HttpError(method, path, resp.status, body, text);
      if (resp.status >= 500 || (resp.status !== 401 && resp.status !== 403 && !opts.expectErrors &&
          resp.status !== 404)) {
        banner.show(err.message);
      }
      throw err;
    }
    if (body === null) {
      const err = new Error(method + ' ' + path + ': the answer is not JSON');
      banner.show(err.message);
      throw err;
    }
    return body;
  }

  /* What a view shows in place of its content when a call failed: the token prompt (401), a
   * clear refusal (403), or the error. */
  function failure(box, err, retry) {
    box.replaceChildren();
    const again = function () {
      waiting = false;
      retry();
    };
    if (err instanceof HttpError && (err.status === 401 || err.status === 403) && box.isConnected) {
      /* No polling behind a prompt: it would redraw the form under the person typing. */
      waiting = true;
    }
    if (err instanceof HttpError && err.status === 401) {
      const had = token();
      if (had) setToken(null);
      const input = h('input#token-input', {
        type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
        'aria-describedby': 'token-help',
      });
      const form = h('form.card.prompt', {'data-state': 'token-needed', onsubmit: function (e) {
        e.preventDefault();
        setToken(input.value.trim());
        again();
      }},
      h('h2', {text: 'This server needs a token'}),
      h('p', {id: 'token-help', text: (had ? 'The token was refused. ' : '') +
        'Paste a token (maskloss token new NAME --scopes monitor:read,metrics). It is kept for ' +
        'this tab only and sent as Authorization: Bearer.'}),
      h('label', {for: 'token-input', text: 'Token'}), input,
      h('button', {type: 'submit', text: 'Use this token'}),
      err.body && err.body.error ? h('p.muted', {text: 'The server said: ' + err.body.error}) : null);
      box.append(form);
      input.focus();
      return;
    }
    if (err instanceof HttpError && err.status === 403) {
      box.append(h('div.card.refusal', {'data-state': 'forbidden', role: 'status'},
        h('h2', {text: 'This token may not see this'}),
        h('p', {text: 'The server refused the token kept for this tab: ' +
          (err.body && err.body.error ? err.body.error : 'HTTP 403') +
          '. Ask for a token with that scope, or use another one.'}),
        h('button', {type: 'button', text: 'Use another token', onclick: function () {
          setToken(null);
          again();
        }})));
      return;
    }
    box.append(h('div.card.refusal', {'data-state': 'error', role: 'status'},
      h('h2', {text: err instanceof HttpError && err.status === 404 ? 'Not found' : 'Could not load'}),
      h('p', {text: err.message})));
  }

  /* ---- the views ------------------------------------------------------------------------ */

  const enc = encodeURIComponent;

  /* The loss of each monitor's windows, its trend and its drift, one card a monitor. */
  function monitorsView(box) {
    box.append(h('h1', {text: 'Monitors'}));
    const list = h('div.cards', {id: 'monitor-list', 'aria-live': 'polite'});
    box.append(list);
    return {
      every: MONITORS_EVERY_MS,
      refresh: async function () {
        let all, rest;
        try {
          const names = (await api('/v1/monitors')).monitors.map(function (m) { return m.name; });
          rest = names.slice(MAX_CARDS);
          all = await Promise.all(names.slice(0, MAX_CARDS).map(function (n) {
            return api('/v1/monitors/' + enc(n));
          }));
        } catch (e) {
          failure(list, e, this.refresh.bind(this));
          return;
        }
        list.replaceChildren();
        if (!all.length) {
          list.append(h('p.muted', {'data-state': 'empty',
            text: 'No monitors yet: PUT /v1/monitors/{name} creates one (README "Monitors").'}));
        }
        all.forEach(function (d) { list.append(monitorCard(d)); });
        if (rest.length) {
          list.append(h('article.card', null, h('h2', {text: rest.length + ' more'}),
            h('ul', null, rest.map(function (n) {
              return h('li', null, h('a', {href: '#/monitor/' + enc(n), text: n}));
            }))));
        }
      },
    };
  }

  /* Loss up (worse), down or flat: the shortest window against the next longer one (or the
   * total when there is one window), within 1 %. */
  function trendOf(a, b) {
    if (typeof a !== 'number' || typeof b !== 'number') return 'none';
    if (a > b * 1.01 && a - b > 1e-12) return 'up';
    if (a < b * 0.99 && b - a > 1e-12) return 'down';
    return 'flat';
  }
  const ARROWS = {up: '↑', down: '↓', flat: '→', none: '·'};

  function trendFigure(id, src, doc, pathA, pathB, what) {
    const t = trendOf(resolve(doc, pathA), resolve(doc, pathB));
    const words = {up: 'loss up', down: 'loss down', flat: 'loss steady', none: 'no trend'};
    return h('span.trend.trend-' + t, {
      'data-figure': id, 'data-src': src, 'data-path': JSON.stringify([pathA, pathB]),
      'data-format': 'trend', 'data-trend': t, title: words[t] + ': ' + what,
      'aria-label': words[t] + ' (' + what + ')', text: ARROWS[t],
    });
  }

  function monitorCard(d) {
    const name = d.name, src = '/v1/monitors/' + enc(name), wins = d.config.windows;
    const base = 'monitor:' + name + ':';
    const rows = wins.map(function (w) {
      return h('tr', null, h('th', {scope: 'row', text: w}),
        h('td.n', null, fig(base + 'loss:' + w, src, d, ['windows', w, 'loss'], 'num')),
        h('td.n', null, fig(base + 'observations:' + w, src, d, ['windows', w, 'observations'], 'int')));
    });
    rows.push(h('tr.total', null, h('th', {scope: 'row', text: 'total'}),
      h('td.n', null, fig(base + 'loss:total', src, d, ['total', 'loss'], 'num')),
      h('td.n', null, fig(base + 'observations:total', src, d, ['total', 'observations'], 'int'))));
    const a = ['windows', wins[0], 'loss'];
    const b = wins.length > 1 ? ['windows', wins[1], 'loss'] : ['total', 'loss'];
    const drifting = resolve(d, ['drift']) || [];
    return h('article.card.monitor', {'data-monitor': name},
      h('h2', null, h('a', {href: '#/monitor/' + enc(name), text: name})),
      h('p.meta', {text: d.config.loss + ' · ' + d.config.reduction + ' · ' + d.config.dtype}),
      h('p.summary', null,
        trendFigure(base + 'trend', src, d, a, b, wins[0] + ' against ' + (wins[1] || 'total')),
        ' ', h('span.muted', {text: wins[0] + ' vs ' + (wins[1] || 'total')}), ' · ',
        h('span' + (drifting.length ? '.drift-badge' : ''), null,
          fig(base + 'drift', src, d, ['drift'], 'classes'), ' drifting')),
      table('wins', ['window', 'loss', 'observations'], rows));
  }

  /* One monitor: its windows, the chart, the classes, the slices, the late labels. */
  function monitorView(box, name) {
    const src = '/v1/monitors/' + enc(name);
    const state = {range: 3600, step: 60, cls: '', window: null, sort: 'z', desc: true, doc: null,
      chart: null};
    box.append(h('p.crumbs', null, h('a', {href: '#/', text: 'Monitors'}), ' / ', name));
    const head = h('div', {id: 'monitor-head'});
    const body = h('div', {id: 'monitor-body'});
    box.append(head, body);
    const secWindows = h('section.card', {id: 'windows'});
    const secChart = h('section.card', {id: 'chart'});
    const secClasses = h('section.card', {id: 'classes'});
    const secSlices = h('section.card', {id: 'slices'});
    const secLabels = h('section.card', {id: 'labels'});
    let built = false;
    let chartBox, legend, dataTable, classBody, classWindows, driftNote;

    function buildControls(d) {
      const cfg = d.config;
      head.replaceChildren(h('h1', {text: name}), h('p.meta', {
        text: cfg.loss + ' · ' + cfg.reduction + ' · ' + cfg.dtype +
          (cfg.classes ? ' · ' + cfg.classes.length + ' classes' : '') +
          (cfg.slices && cfg.slices.length ? ' · slices: ' + cfg.slices.join(', ') : '') +
          ' · drift at |z| ≥ ' + cfg.drift.z + ' with weight ≥ ' + cfg.drift.min_weight,
      }));
      body.append(secWindows, secChart);

      const ranges = [[3600, '1 hour'], [6 * 3600, '6 hours'], [86400, '24 hours'],
        [7 * 86400, '7 days'], [30 * 86400, '30 days']];
      const steps = [[60, '1 min'], [300, '5 min'], [900, '15 min'], [3600, '1 hour'],
        [6 * 3600, '6 hours'], [86400, '1 day']];
      const rangeSel = h('select#range', null, ranges.map(function (r) {
        return h('option', {value: r[0], text: r[1], selected: r[0] === state.range});
      }));
      const stepSel = h('select', {id: 'step'}, steps.map(function (r) {
        return h('option', {value: r[0], text: r[1], selected: r[0] === state.step});
      }));
      function fitSteps() {
        /* The server answers at most 10000 steps; more than 1500 points is more than a chart
         * can show. */
        let ok = null;
        Array.from(stepSel.options).forEach(function (o) {
          const st = Number(o.value);
          o.disabled = state.range / st > 1500 || st >= state.range;
          if (!o.disabled && ok === null) ok = st;
        });
        if (stepSel.selectedOptions[0].disabled) {
          state.step = ok;
          stepSel.value = String(ok);
        }
      }
      /* The step each range starts with: 60 to 360 points. */
      const defaultStep = {3600: 60, 21600: 300, 86400: 900, 604800: 3600, 2592000: 21600};
      rangeSel.addEventListener('change', function () {
        state.range = Number(rangeSel.value);
        state.step = defaultStep[state.range] || state.step;
        stepSel.value = String(state.step);
        fitSteps();
        loadChart();
      });
      stepSel.addEventListener('change', function () {
        state.step = Number(stepSel.value);
        loadChart();
      });
      fitSteps();
      const controls = [h('label', null, 'Range ', rangeSel), h('label', null, 'Step ', stepSel)];
      if (cfg.classes || cfg.num_classes) {
        const names = cfg.classes || Array.from({length: cfg.num_classes}, function (_, i) {
          return String(i);
        });
        const clsSel = h('select', {id: 'class'}, h('option', {value: '', text: 'all classes'}),
          names.map(function (c) { return h('option', {value: c, text: c}); }));
        clsSel.addEventListener('change', function () {
          state.cls = clsSel.value;
          loadChart();
        });
        controls.push(h('label', null, 'Class ', clsSel));
      }
      chartBox = h('div.chart', {id: 'chart-box'});
      legend = h('ul.legend', {id: 'legend'});
      dataTable = h('div', {id: 'chart-data'});
      secChart.append(h('h2', {text: 'Loss over time'}),
        h('p.muted.small', {text: 'The masked loss per step (' + cfg.loss + ', ' + cfg.reduction +
          ', ' + cfg.dtype + '), one line for all observations and one per slice value; a ' +
          'step without observations is a gap.'}),
        h('div.row.controls', null, controls),
        chartBox, legend, h('details', null, h('summary', {text: 'The points as a table'}),
          dataTable));
      if (window.ResizeObserver) {
        let lastWidth = 0;
        new ResizeObserver(function () {
          if (state.chart && chartBox.clientWidth !== lastWidth) {
            lastWidth = chartBox.clientWidth;
            drawChart(chartBox, state.chart);
          }
        }).observe(chartBox);
      }

      if (cfg.classes || cfg.num_classes) {
        body.append(secClasses);
        classWindows = h('div.row.seg', {role: 'group', 'aria-label': 'Window'});
        cfg.windows.forEach(function (w) {
          classWindows.append(h('button', {type: 'button', 'data-window': w, text: w,
            'aria-pressed': String(w === cfg.windows[0]), onclick: function () {
              state.window = w;
              Array.from(classWindows.children).forEach(function (b) {
                b.setAttribute('aria-pressed', String(b.dataset.window === w));
              });
              renderClasses();
            }}));
        });
        state.window = cfg.windows[0];
        const sortable = [['class', 'class', false], ['loss', 'loss', true], ['weight', 'Σ weights', false],
          ['change', 'change', true], ['z', 'z-score', true]];
        const heads = sortable.map(function (c) {
          if (!c[2] && c[0] !== 'class') return h('th', {scope: 'col', text: c[1]});
          const btn = h('button.sort', {type: 'button', 'data-sort': c[0], text: c[1],
            onclick: function () {
              if (state.sort === c[0]) state.desc = !state.desc;
              else {
                state.sort = c[0];
                state.desc = c[0] !== 'class';
              }
              renderClasses();
            }});
          return h('th', {scope: 'col', 'data-col': c[0]}, btn);
        });
        classBody = h('tbody', {id: 'class-rows'});
        driftNote = h('p', {id: 'drift-note'});
        secClasses.append(h('h2', {text: 'Per class'}), classWindows, driftNote,
          h('div.scroll', null, h('table.classes', {id: 'class-table'},
            h('thead', null, h('tr', null, heads)), classBody)),
          h('p.muted.small', {text: 'change and z-score: the weighted mean against the same length ' +
            'just before the window (or the pinned reference); — without weight on either side.'}));
      }
      if (Object.keys(d.slices || {}).length) body.append(secSlices);
      if (usesLabels(d)) body.append(secLabels);
      built = true;
    }

    function renderWindows(d) {
      const wins = d.config.windows;
      const cells = function (key, path) {
        return [
          h('td.n', null, fig('monitor:' + name + ':loss:' + key, src, d, path.concat('loss'), 'num')),
          h('td.n', null, fig('monitor:' + name + ':sum_weights:' + key, src, d,
            path.concat('sum_weights'), 'weight')),
          h('td.n', null, fig('monitor:' + name + ':samples:' + key, src, d, path.concat('samples'), 'int')),
          h('td.n', null, fig('monitor:' + name + ':observations:' + key, src, d,
            path.concat('observations'), 'int')),
        ];
      };
      const rows = wins.map(function (w) {
        return h('tr', null, h('th', {scope: 'row', text: w,
          title: 'the buckets from ' + time(resolve(d, ['windows', w, 'from']))}), cells(w, ['windows', w]));
      });
      rows.push(h('tr.total', null, h('th', {scope: 'row', text: 'total'}), cells('total', ['total'])));
      const a = ['windows', wins[0], 'loss'];
      const b = wins.length > 1 ? ['windows', wins[1], 'loss'] : ['total', 'loss'];
      secWindows.replaceChildren(h('h2', null, 'Windows ',
        trendFigure('monitor:' + name + ':trend', src, d, a, b,
          wins[0] + ' against ' + (wins[1] || 'total')),
        h('span.muted.small', {text: ' ' + wins[0] + ' against ' + (wins[1] || 'total')})),
      table('wins.full', ['window', 'loss', 'Σ weights', 'samples', 'observations'], rows));
    }

    function classRows(d) {
      const w = state.window;
      const per = resolve(d, ['windows', w, 'per_class']) || [];
      return per.map(function (c) {
        const dr = (d.drift || []).find(function (x) { return x.window === w && x.class === c.class; });
        /* The server gives every class of a window its drift comparison (null without weight on
         * a side); the drift list's figures are the same ones. */
        const change = 'change' in c ? c.change : dr ? dr.change : null;
        const z = 'z' in c ? c.z : dr ? dr.z : null;
        return {c: c, drift: dr, change: change, z: z};
      });
    }

    function renderClasses() {
      const d = state.doc;
      if (!classBody || !d) return;
      const w = state.window;
      const rows = classRows(d);
      const key = state.sort, dir = state.desc ? -1 : 1;
      /* JSON has no infinities: the server writes them as the strings "Infinity" and
       * "-Infinity" (a z without variance on either side), which sort as the numbers they are. */
      const asNumber = function (v) {
        return v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v;
      };
      const val = function (r) {
        if (key === 'class') return String(r.c.class);
        if (key === 'loss') return asNumber(r.c.loss);
        if (key === 'change') return asNumber(r.change);
        return asNumber(r.z);
      };
      rows.sort(function (ra, rb) {
        const x = val(ra), y = val(rb);
        const xn = typeof x !== 'number' && key !== 'class', yn = typeof y !== 'number' && key !== 'class';
        if (xn || yn) return xn === yn ? 0 : xn ? 1 : -1; /* no figure: last either way */
        if (x < y) return -dir;
        if (x > y) return dir;
        return 0;
      });
      Array.from(document.querySelectorAll('#class-table th[data-col]')).forEach(function (th) {
        th.setAttribute('aria-sort', th.dataset.col === key ? (state.desc ? 'descending' : 'ascending')
          : 'none');
      });
      const base = 'monitor:' + name + ':class:' + w + ':';
      classBody.replaceChildren.apply(classBody, rows.map(function (r) {
        const cls = r.c.class;
        const sel = {class: cls};
        const dsel = {window: w, class: cls};
        const p = ['windows', w, 'per_class', sel];
        const useServer = 'z' in r.c;
        return h('tr' + (r.drift ? '.drift' : ''), {'data-class': String(cls),
          'data-drift': r.drift ? 'true' : 'false'},
        h('th', {scope: 'row'}, String(cls), r.drift ? h('span.badge', {text: 'drifting'}) : null),
        h('td.n', null, fig(base + cls + ':loss', src, d, p.concat('loss'), 'num')),
        h('td.n', null, fig(base + cls + ':sum_weights', src, d, p.concat('sum_weights'), 'weight')),
        h('td.n', null, fig(base + cls + ':change', src, d,
          useServer ? p.concat('change') : ['drift', dsel, 'change'], 'signed')),
        h('td.n', null, fig(base + cls + ':z', src, d,
          useServer ? p.concat('z') : ['drift', dsel, 'z'], 'z')));
      }));
      const here = (d.drift || []).filter(function (x) { return x.window === w; });
      driftNote.replaceChildren(here.length
        ? h('span.drift-badge', null, 'Drifting in ' + w + ': ' + here.map(function (x) {
          return x.class;
        }).join(', ') + ' · ', fig('monitor:' + name + ':drift:' + w, src, d, ['drift'], 'classes'),
        ' drifting in any window')
        : h('span.muted', {text: 'No class drifts in ' + w + '.'}));
    }

    function renderSlices(d) {
      const wins = d.config.windows;
      const keys = Object.keys(d.slices || {});
      if (!keys.length) return;
      const rows = keys.map(function (k) {
        return h('tr', null, h('th', {scope: 'row', text: k}),
          wins.map(function (w) {
            return h('td.n', null, fig('monitor:' + name + ':slice:' + k + ':' + w, src, d,
              ['slices', k, 'windows', w, 'loss'], 'num'));
          }),
          h('td.n', null, fig('monitor:' + name + ':slice:' + k + ':total', src, d,
            ['slices', k, 'total', 'loss'], 'num')));
      });
      secSlices.replaceChildren(h('h2', {text: 'Slices'}),
        table('slices', ['slice'].concat(wins.map(function (w) { return 'loss ' + w; }), ['loss total']), rows));
    }

    function renderLabels(d) {
      if (!usesLabels(d)) return;
      const L = d.labels, base = 'monitor:' + name + ':labels:';
      const wins = d.config.windows.concat(['total']);
      const rows = wins.map(function (w) {
        const dp = w === 'total' ? ['labels', 'delay', 'total'] : ['labels', 'delay', 'windows', w];
        const cp = w === 'total' ? ['labels', 'coverage', 'total'] : ['labels', 'coverage', 'windows', w];
        return h('tr' + (w === 'total' ? '.total' : ''), null, h('th', {scope: 'row', text: w}),
          h('td.n', null, fig(base + 'predictions:' + w, src, d, cp.concat('predictions'), 'int')),
          h('td.n', null, fig(base + 'positions:' + w, src, d, cp.concat('labelled_positions'), 'int')),
          h('td.n', null, fig(base + 'delay_count:' + w, src, d, dp.concat('count'), 'int')),
          ['mean', 'p50', 'p90', 'p99'].map(function (q) {
            return h('td.n', null, fig(base + 'delay_' + q + ':' + w, src, d, dp.concat(q), 'dur'));
          }));
      });
      const perClass = (L.per_class || []).map(function (c) {
        const p = ['labels', 'per_class', {class: c.class}];
        return h('tr', null, h('th', {scope: 'row', text: String(c.class)}),
          h('td.n', null, fig(base + 'class:' + c.class + ':labelled', src, d, p.concat('labelled'), 'int')),
          h('td.n', null, h('span.bar', null, h('span.fill', {'data-fraction': c.fraction})),
            fig(base + 'class:' + c.class + ':fraction', src, d, p.concat('fraction'), 'pct')));
      });
      secLabels.replaceChildren(h('h2', {text: 'Late labels'}),
        h('p', null, fig(base + 'predictions', src, d, ['labels', 'predictions'], 'int'),
          ' predictions stored, ', fig(base + 'positions', src, d, ['labels', 'labelled_positions'], 'int'),
          ' positions labelled.'),
        h('h3', {text: 'Coverage and label delay, by the predictions\' window'}),
        table('delays', ['window', 'predictions', 'labelled positions', 'delays', 'mean delay', 'p50', 'p90',
          'p99'], rows),
        h('h3', {text: 'Labelled, per class'}),
        table('', ['class', 'labelled', 'fraction of predictions'], perClass));
      secLabels.querySelectorAll('.fill').forEach(function (el) {
        el.style.width = Math.max(0, Math.min(1, Number(el.dataset.fraction))) * 100 + '%';
      });
    }

    async function loadChart() {
      const d = state.doc;
      if (!d) return;
      const step = state.step;
      /* The server's clock, not this browser's: the end of its current minute. */
      const to = Math.floor(d.now / 60) * 60 + 60;
      const from = to - state.range;
      const lines = [{label: 'all', slice: null}].concat(Object.keys(d.slices || {}).slice(0, MAX_LINES)
        .map(function (k) { return {label: k, slice: k}; }));
      let answers;
      try {
        answers = await Promise.all(lines.map(function (l) {
          l.src = src + '/series?step=' + step + 's&from=' + from + '&to=' + to +
            (l.slice ? '&slice=' + enc(l.slice) : '') + (state.cls ? '&class=' + enc(state.cls) : '');
          return api(l.src);
        }));
      } catch (e) {
        failure(chartBox, e, loadChart);
        return;
      }
      lines.forEach(function (l, i) {
        l.doc = answers[i];
        l.points = answers[i].points;
        /* "all" in the text's own colour (dark on light, light on dark). */
        l.color = i ? COLORS[i % COLORS.length]
          : getComputedStyle(document.body).color || COLORS[0];
      });
      state.chart = {lines: lines, from: from, to: to, step: step, cls: state.cls};
      drawChart(chartBox, state.chart);
      legend.replaceChildren.apply(legend, lines.map(function (l) {
        const sw = h('span.swatch');
        sw.style.background = l.color;
        return h('li', {'data-line': l.label}, sw, l.label === 'all' ? 'all slices' : l.label,
          ' (', String(l.points.length), ' points)');
      }));
      const rows = [];
      lines.forEach(function (l) {
        l.points.forEach(function (p) {
          rows.push(h('tr', null, h('th', {scope: 'row', text: l.label}),
            h('td', null, fig('series:' + l.label + ':' + p.t + ':t', l.src, l.doc,
              ['points', {t: p.t}, 't'], 'time')),
            h('td.n', null, fig('series:' + l.label + ':' + p.t + ':loss', l.src, l.doc,
              ['points', {t: p.t}, 'loss'], 'num')),
            h('td.n', null, fig('series:' + l.label + ':' + p.t + ':observations', l.src, l.doc,
              ['points', {t: p.t}, 'observations'], 'int'))));
        });
      });
      dataTable.replaceChildren(table('', ['line', 'step from', 'loss', 'observations'], rows));
    }

    return {
      every: MONITORS_EVERY_MS,
      refresh: async function () {
        let d;
        try {
          d = await api(src);
        } catch (e) {
          body.replaceChildren();
          head.replaceChildren(h('h1', {text: name}));
          built = false;
          failure(body, e, this.refresh.bind(this));
          return;
        }
        state.doc = d;
        if (!built) buildControls(d);
        renderWindows(d);
        renderClasses();
        renderSlices(d);
        renderLabels(d);
        await loadChart();
      },
    };
  }

  /* Late labels: shown for the monitors that were sent predictions. */
  function usesLabels(d) {
    return !!d.labels && (d.labels.predictions > 0 || d.labels.labelled_positions > 0);
  }

  /* ---- the chart ------------------------------------------------------------------------ */

  /* About n round values spanning [lo, hi]. */
  function ticks(lo, hi, n) {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const stepv = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; })
      .find(function (v) { return v >= raw; });
    const out = [];
    for (let v = Math.ceil(lo / stepv) * stepv; v <= hi + stepv * 1e-9; v += stepv) {
      out.push(Math.abs(v) < stepv * 1e-9 ? 0 : v);
    }
    return out;
  }

  function stepLabel(sec) {
    if (sec % 86400 === 0) return sec / 86400 + ' d';
    if (sec % 3600 === 0) return sec / 3600 + ' h';
    return sec / 60 + ' min';
  }

  function timeLabel(t, span) {
    const iso = new Date(t * 1000).toISOString();
    return span > 2 * 86400 ? iso.slice(5, 10) + ' ' + iso.slice(11, 16) : iso.slice(11, 16);
  }

  function drawChart(box, c) {
    const W = Math.max(280, box.clientWidth || 640), H = W < 500 ? 220 : 280;
    const m = {l: 58, r: 12, t: 14, b: 42};
    const all = [];
    c.lines.forEach(function (l) { l.points.forEach(function (p) { all.push(p); }); });
    const finite = all.map(function (p) { return p.loss; }).filter(function (v) {
      return typeof v === 'number';
    });
    let ymax = finite.length ? Math.max.apply(null, finite) : 1;
    let ymin = finite.length ? Math.min(0, Math.min.apply(null, finite)) : 0;
    if (ymax <= ymin) ymax = ymin + 1;
    ymax += (ymax - ymin) * 0.08; /* room above the highest point */
    const yt = ticks(ymin, ymax, 4);
    ymax = Math.max(ymax, yt[yt.length - 1]);
    const X = function (t) { return m.l + (t - c.from) / (c.to - c.from) * (W - m.l - m.r); };
    const Y = function (v) { return H - m.b - (v - ymin) / (ymax - ymin) * (H - m.t - m.b); };
    const svg = s('svg', {viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img',
      tabindex: '0', id: 'chart-svg', 'aria-label': 'The loss over time, one line per slice value; ' +
      'arrow keys move between the points, the table below lists them'});
    /* Axes, with their units. */
    const axis = s('g', {class: 'axis'});
    yt.forEach(function (v) {
      axis.append(s('line', {x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: 'grid'}),
        s('text', {x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end'}, num(v, 3)));
    });
    const span = c.to - c.from;
    const every = [60, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
      2 * 86400, 7 * 86400].find(function (v) { return span / v <= (W < 500 ? 4 : 7); }) || 7 * 86400;
    for (let t = Math.ceil(c.from / every) * every; t <= c.to; t += every) {
      /* A label near an edge is anchored at it, not cut off. */
      const anchor = X(t) > W - m.r - 20 ? 'end' : X(t) < m.l + 20 ? 'start' : 'middle';
      axis.append(s('line', {x1: X(t), x2: X(t), y1: H - m.b, y2: H - m.b + 5}),
        s('text', {x: X(t), y: H - m.b + 18, 'text-anchor': anchor}, timeLabel(t, span)));
    }
    axis.append(s('line', {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}),
      s('line', {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}),
      s('text', {x: W - m.r, y: H - 4, 'text-anchor': 'end', class: 'unit'},
        'time (UTC), one point per ' + stepLabel(c.step)),
      s('text', {x: 12, y: m.t + (H - m.t - m.b) / 2, class: 'unit', 'text-anchor': 'middle',
        transform: 'rotate(-90 12 ' + (m.t + (H - m.t - m.b) / 2) + ')'},
      'loss' + (c.cls ? ' of ' + c.cls : '')));
    svg.append(axis);
    /* The lines: broken where a step has no point (no observation then). */
    c.lines.forEach(function (l, i) {
      const pts = l.points.filter(function (p) { return typeof p.loss === 'number'; });
      let dpath = '';
      pts.forEach(function (p, k) {
        const join = k > 0 && p.t - pts[k - 1].t <= c.step;
        dpath += (join ? 'L' : 'M') + X(p.t).toFixed(1) + ' ' + Y(p.loss).toFixed(1);
      });
      const g = s('g', {'data-line': l.label, class: 'line'});
      g.append(s('path', {d: dpath, fill: 'none', stroke: l.color, 'stroke-width': i ? 1.6 : 2.4}));
      if (pts.length <= 400) {
        pts.forEach(function (p) {
          g.append(s('circle', {cx: X(p.t), cy: Y(p.loss), r: 2.6, fill: l.color, 'data-t': p.t,
            'data-loss': p.loss}));
        });
      }
      svg.append(g);
    });
    const cursor = s('line', {class: 'cursor', y1: m.t, y2: H - m.b, x1: -10, x2: -10});
    svg.append(cursor);
    const catcher = s('rect', {x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b,
      fill: 'transparent'});
    svg.append(catcher);
    const tip = h('div.tip', {id: 'chart-tip', role: 'status', hidden: true});
    const times = Array.from(new Set(all.map(function (p) { return p.t; }))).sort(function (a, b) {
      return a - b;
    });
    let at = -1;
    function show(k) {
      if (k < 0 || k >= times.length) return;
      at = k;
      const t = times[k];
      cursor.setAttribute('x1', X(t));
      cursor.setAttribute('x2', X(t));
      tip.replaceChildren.apply(tip, [h('strong', {text: time(t)})].concat(c.lines.map(function (l) {
        const p = l.points.find(function (q) { return q.t === t; });
        const sw = h('span.swatch');
        sw.style.background = l.color;
        return h('div', {'data-line': l.label}, sw, l.label + ': ',
          h('span.v', {text: p ? num(p.loss) : '—'}));
      })));
      tip.hidden = false;
      const x = X(t) / W * box.clientWidth;
      tip.style.left = Math.max(0, Math.min(box.clientWidth - 180, x + 12)) + 'px';
      tip.style.top = '8px';
    }
    function nearest(px) {
      let best = -1, bd = Infinity;
      times.forEach(function (t, k) {
        const dd = Math.abs(X(t) - px);
        if (dd < bd) {
          bd = dd;
          best = k;
        }
      });
      return best;
    }
    svg.addEventListener('pointermove', function (e) {
      const r = svg.getBoundingClientRect();
      show(nearest((e.clientX - r.left) / r.width * W));
    });
    svg.addEventListener('pointerleave', function () {
      tip.hidden = true;
      cursor.setAttribute('x1', -10);
      cursor.setAttribute('x2', -10);
    });
    svg.addEventListener('keydown', function (e) {
      if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
        e.preventDefault();
        show(at < 0 ? times.length - 1 : Math.max(0, Math.min(times.length - 1,
          at + (e.key === 'ArrowRight' ? 1 : -1))));
      } else if (e.key === 'Escape') {
        tip.hidden = true;
      }
    });
    box.replaceChildren(svg, tip);
    if (!times.length) {
      box.append(h('p.empty', {text: 'No observation in this range.'}));
    }
  }

  /* ---- the server ----------------------------------------------------------------------- */

  function serverView(box) {
    box.append(h('h1', {text: 'Server'}));
    const content = h('div', {id: 'server'});
    box.append(content);
    let prev = null, rates = null;
    const history = [];
    return {
      every: STATS_EVERY_MS,
      refresh: async function () {
        let st;
        try {
          st = await api('/v1/stats');
        } catch (e) {
          failure(content, e, this.refresh.bind(this));
          return;
        }
        const src = '/v1/stats';
        const total = function (x) {
          return x.routes.reduce(function (a, r) { return a + r.requests; }, 0);
        };
        /* Rates over at least a second: two polls close together (a refresh right after a
         * poll) would divide a request or two by milliseconds. */
        if (!prev || st.now - prev.now >= 1) {
          if (prev) {
            rates = {all: (total(st) - total(prev)) / (st.now - prev.now), routes: {},
              basis: [total(prev), total(st), prev.now, st.now].join(' ')};
            st.routes.forEach(function (r) {
              const before = prev.routes.find(function (x) { return x.route === r.route; });
              rates.routes[r.route] = (r.requests - (before ? before.requests : 0)) /
                (st.now - prev.now);
            });
            history.push(rates.all);
            if (history.length > 60) history.shift();
          }
          prev = st;
        }
        const rps = rates ? rates.all : null, routeRps = rates ? rates.routes : {};
        /* What the rate is of: requests then and now, and the two polls' times. */
        const rateFig = derived('stats:rps', rps, 'rate');
        if (rates) rateFig.dataset.basis = rates.basis;
        const item = function (label, node) { return [h('dt', {text: label}), h('dd', null, node)]; };
        const F = function (id, path, format) { return fig('stats:' + id, src, st, path, format); };
        const summary = h('dl.facts', null,
          item('version', F('version', ['version'], 'text')),
          item('build', F('build', ['build'], 'text')),
          item('started', F('started', ['started'], 'time')),
          item('ready', F('ready', ['ready'], 'bool')),
          item('HTTP threads', F('http_threads', ['http_threads'], 'int')),
          item('queue', [F('queued', ['queue', 'queued'], 'int'), ' waiting, room for ',
            F('capacity', ['queue', 'capacity'], 'int')]),
          item('requests in flight', [F('in_flight', ['in_flight'], 'int'), ', holding ',
            F('inflight_bytes', ['inflight_bytes'], 'bytes'), ' of ',
            F('inflight_limit', ['inflight_limit'], 'bytes')]),
          item('received / sent', [F('bytes_received', ['bytes_received'], 'bytes'), ' / ',
            F('bytes_sent', ['bytes_sent'], 'bytes')]),
          item('batch entries', F('batch_entries', ['batch_entries'], 'int')),
          item('state', [F('commits', ['state', 'commits'], 'int'), ' commits, ',
            F('state_observations', ['state', 'observations'], 'int'), ' writes, ',
            F('failures', ['state', 'failures'], 'int'), ' failures']));
        const routes = st.routes.map(function (r) {
          const p = ['routes', {route: r.route}];
          const id = 'stats:route:' + r.route + ':';
          return h('tr', {'data-route': r.route}, h('th', {scope: 'row', text: r.route}),
            h('td.n', null, fig(id + 'requests', src, st, p.concat('requests'), 'int')),
            h('td.n', null, derived(id + 'rps', r.route in routeRps ? routeRps[r.route] : null, 'rate')),
            h('td.codes', null, Object.keys(r.codes).map(function (code) {
              return h('span.code.code-' + code[0], null, code + ': ',
                fig(id + 'code:' + code, src, st, p.concat(['codes', code]), 'int'));
            })),
            ['p50', 'p90', 'p99'].map(function (q) {
              return h('td.n', null, fig(id + q, src, st, p.concat(['latency', q]), 'dur'));
            }));
        });
        const elements = Object.keys(st.elements).sort().map(function (k) {
          return h('tr', null, h('th', {scope: 'row', text: k}),
            h('td.n', null, fig('stats:elements:' + k, src, st, ['elements', k], 'int')));
        });
        const qw = function (q, f) {
          return fig('stats:queue_wait:' + q, src, st, ['queue_wait', q], f || 'dur');
        };
        content.replaceChildren(
          h('section.card', null, h('h2', {text: 'Health'}),
            h('div.tiles', null,
              h('div.tile', null, h('span.label', {text: 'requests/s, all routes'}),
                h('span.big', null, rateFig), sparkline(history)),
              h('div.tile', null, h('span.label', {text: 'uptime'}),
                h('span.big', null, derived('stats:uptime', st.uptime_seconds, 'uptime'))),
              st.routes.some(function (r) { return r.route === '/v1/loss'; })
                ? h('div.tile', null, h('span.label', {text: '/v1/loss latency, p50 · p99'}),
                  h('span.big', null,
                    fig('stats:route:/v1/loss:p50', src, st, ['routes', {route: '/v1/loss'}, 'latency', 'p50'], 'dur'),
                    ' · ',
                    fig('stats:route:/v1/loss:p99', src, st, ['routes', {route: '/v1/loss'}, 'latency', 'p99'], 'dur')))
                : null,
              h('div.tile', null, h('span.label', {text: 'workers busy'}),
                h('span.big', null, fig('stats:running', src, st, ['queue', 'running'], 'int'), ' / ',
                  fig('stats:workers', src, st, ['workers'], 'int')))),
            summary),
          h('section.card', null, h('h2', {text: 'Routes'}),
            table('routes', ['route', 'requests', 'req/s', 'answers', 'p50', 'p90', 'p99'], routes),
            h('p.muted', {text: 'Latency quantiles interpolated in the histogram\'s buckets ' +
              '(as Prometheus\'s histogram_quantile), since the start.'}),
            h('p', null, 'Time in the queue (', qw('count', 'int'), ' requests): p50 ', qw('p50'),
              ', p90 ', qw('p90'), ', p99 ', qw('p99'))),
          h('section.card', null, h('h2', {text: 'Elements evaluated, per loss'}),
            elements.length ? table('', ['loss', 'elements'], elements)
              : h('p.muted', {text: 'None yet.'})));
      },
    };
  }

  /* requests/s over the last polls. */
  function sparkline(values) {
    const W = 240, H = 36;
    const svg = s('svg', {viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, class: 'spark',
      role: 'img', 'aria-label': 'requests per second over the last ' + values.length + ' polls'});
    if (values.length < 2) return null;
    {
      const max = Math.max.apply(null, values.concat([1e-9]));
      let d = '';
      values.forEach(function (v, i) {
        d += (i ? 'L' : 'M') + (i / (values.length - 1) * W).toFixed(1) + ' ' +
          (H - 2 - v / max * (H - 4)).toFixed(1);
      });
      svg.append(s('path', {d: d, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5}));
    }
    return svg;
  }

  /* ---- try it --------------------------------------------------------------------------- */

  function tryView(box) {
    const area = h('textarea', {id: 'try-body', rows: 8, spellcheck: 'false', autocomplete: 'off',
      'aria-describedby': 'try-help'});
    area.value = EXAMPLE;
    const result = h('section.card', {id: 'try-result', 'aria-live': 'polite', hidden: true});
    const send = async function (e) {
      if (e) e.preventDefault();
      area.removeAttribute('aria-invalid');
      result.hidden = false;
      result.replaceChildren(h('p.muted', {text: 'Sending…'}));
      let answer;
      try {
        answer = await api('/v1/loss', {method: 'POST', body: area.value, expectErrors: true});
      } catch (err) {
        if (err instanceof HttpError && err.body && err.body.code &&
            err.status !== 401 && err.status !== 403) {
          showError(err);
        } else {
          failure(result, err, send);
        }
        return;
      }
      result.replaceChildren(h('h2', {text: 'Answer'}),
        h('p.big', null, 'loss ', h('span.fig', {'data-figure': 'try:loss', 'data-format': 'full',
          text: FMT.full(answer.loss)})),
        h('pre', {id: 'try-answer', text: JSON.stringify(answer, null, 1)}));
    };
    function showError(err) {
      const b = err.body, field = b.field || '';
      const top = field.split(/[.[]/)[0];
      area.setAttribute('aria-invalid', 'true');
      let request = null;
      try {
        request = JSON.parse(area.value);
      } catch (e) {
        request = null;
      }
      /* The request again, its offending member (or line, for malformed JSON) marked. */
      const shown = h('pre.request', {id: 'try-request'});
      if (request && typeof request === 'object' && !Array.isArray(request)) {
        shown.append('{\n');
        const keys = Object.keys(request);
        keys.forEach(function (k, i) {
          const line = ' ' + JSON.stringify(k) + ': ' + JSON.stringify(request[k]) +
            (i < keys.length - 1 ? ',' : '') + '\n';
          shown.append(k === top ? h('mark', {'data-error-key': k, text: line}) : line);
        });
        shown.append('}');
      } else {
        area.value.split('\n').forEach(function (line, i) {
          shown.append(b.line === i + 1 ? h('mark', {'data-error-line': String(i + 1), text: line + '\n'})
            : line + '\n');
        });
      }
      const at = top ? area.value.indexOf(JSON.stringify(top)) : -1;
      if (at >= 0) area.setSelectionRange(at, at + top.length + 2);
      result.replaceChildren(h('h2', {text: 'Refused: HTTP ' + err.status}),
        h('dl.facts.error', {id: 'try-error', 'data-code': b.code},
          h('dt', {text: 'code'}), h('dd', null, h('code', {text: b.code})),
          h('dt', {text: 'field'}), h('dd', null, field ? h('mark.field', {'data-error-field': field,
            text: field}) : h('span.muted', {text: '(the request as a whole)'})),
          b.line ? [h('dt', {text: 'line, column'}), h('dd', {text: b.line + ', ' + b.column})] : null,
          h('dt', {text: 'message'}), h('dd', {text: b.error})),
        h('h3', {text: 'Your request'}), shown);
    }
    box.append(h('h1', {text: 'Try it'}),
      h('form.card', {id: 'try-form', onsubmit: send},
        h('label', {for: 'try-body', text: 'A request to POST /v1/loss'}),
        h('p.muted', {id: 'try-help', text: 'Prefilled with the note\'s masked example (README ' +
          '"The note\'s masked example"); any request of the JSON protocol works.'}),
        area,
        h('div.row', null, h('button', {type: 'submit', id: 'try-send', text: 'Send'}),
          h('button', {type: 'button', id: 'try-example', text: 'The note\'s example', onclick: function () {
            area.value = EXAMPLE;
          }}),
          h('button', {type: 'button', id: 'try-broken', text: 'An example with a mistake',
            onclick: function () { area.value = BROKEN_EXAMPLE; }}))),
      result);
    return {every: 0, refresh: async function () {}};
  }

  /* ---- routing and refresh -------------------------------------------------------------- */

  let current = null, timer = null, generation = 0, paused = false;

  function parseRoute() {
    const hash = location.hash || '#/';
    if (hash.startsWith('#/monitor/')) {
      const raw = hash.slice('#/monitor/'.length);
      let name;
      try {
        name = decodeURIComponent(raw);
      } catch (e) {
        name = raw; /* a malformed escape in a hand-made link: the name as written (not found) */
      }
      return {view: 'monitor', name: name};
    }
    if (hash === '#/server') return {view: 'server'};
    if (hash === '#/try') return {view: 'try'};
    return {view: 'monitors'};
  }

  function status(text) {
    document.getElementById('status').textContent = text;
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (paused || waiting || !current || !current.every || document.hidden) return;
    timer = setTimeout(tick, current.every);
  }

  async function tick() {
    const g = generation;
    try {
      await current.refresh();
      document.body.setAttribute('data-loaded', String(g));
      status('Updated ' + new Date().toISOString().slice(11, 19) + ' UTC' +
        (current.every ? (paused ? ' · refresh paused' : ' · every ' + current.every / 1000 + ' s')
          : ''));
    } finally {
      if (g === generation) schedule();
    }
  }

  function route() {
    clearTimeout(timer);
    generation++;
    waiting = false;
    const r = parseRoute();
    const main = document.getElementById('main');
    main.replaceChildren();
    document.body.removeAttribute('data-loaded');
    /* A new view: the errors of the last one are no longer news. */
    document.getElementById('banner').hidden = true;
    banner.messages = [];
    document.querySelectorAll('[data-nav]').forEach(function (a) {
      if (a.dataset.nav === (r.view === 'monitor' ? 'monitors' : r.view)) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    if (r.view === 'monitor') current = monitorView(main, r.name);
    else if (r.view === 'server') current = serverView(main);
    else if (r.view === 'try') current = tryView(main);
    else current = monitorsView(main);
    document.title = (r.view === 'monitor' ? r.name : r.view) + ' · maskloss-server';
    tick();
  }

  function setPaused(p) {
    paused = p;
    const b = document.getElementById('pause');
    b.setAttribute('aria-pressed', String(p));
    b.textContent = p ? 'Resume' : 'Pause';
    status(p ? 'Refresh paused' : 'Refresh on');
    if (!p && current) tick();
    else schedule();
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.getElementById('loading').remove();
    document.getElementById('pause').addEventListener('click', function () { setPaused(!paused); });
    document.getElementById('forget-token').addEventListener('click', function () {
      setToken(null);
      route();
    });
    document.getElementById('forget-token').hidden = !token();
    document.getElementById('banner-close').addEventListener('click', function () {
      document.getElementById('banner').hidden = true;
      banner.messages = [];
    });
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && !paused && current) tick();
      else schedule();
    });
    window.addEventListener('hashchange', route);
    route();
  });

  /* For tests/ui/run.py: the formatting rules, to check they agree with its own. */
  window.maskloss = {FMT: FMT, resolve: resolve, setPaused: setPaused, refresh: function () {
    return tick();
  }};
})();
