"""Inline CSS and JavaScript shared by every page (no external assets: the report opens
from disk, offline)."""

from __future__ import annotations

CSS = """
:root { --fg:#1d232b; --muted:#5d6875; --line:#d9dee4; --bg:#f6f7f9; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
header.top { background:#14324f; color:#fff; padding:10px 22px; display:flex; gap:22px;
  align-items:baseline; }
header.top .brand { font-weight:700; letter-spacing:.5px; }
header.top a { color:#cfe3f7; text-decoration:none; }
header.top a.active { color:#fff; border-bottom:2px solid #fff; }
main { padding:16px 22px 40px; }
h1 { font-size:22px; margin:4px 0 2px; }
h2 { font-size:17px; margin:26px 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { font-size:15px; margin:16px 0 6px; }
.sub { color:var(--muted); margin:0 0 12px; }
a { color:var(--accent); }
table { border-collapse:collapse; background:#fff; }
th, td { border:1px solid var(--line); padding:3px 7px; text-align:left; vertical-align:top; }
th { background:#eef1f5; font-weight:600; white-space:nowrap; }
table.kv th { width:190px; }
table.sortable th { cursor:pointer; user-select:none; }
table.sortable th.sorted-asc::after { content:" \\25B2"; font-size:9px; }
table.sortable th.sorted-desc::after { content:" \\25BC"; font-size:9px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.st { white-space:nowrap; font-size:12px; text-align:center; min-width:64px; }
.st small { display:block; opacity:.8; font-size:10.5px; }
.st-pending { background:#eceff1; color:#5d6875; }
.st-running { background:#d4e8f8; color:#0f4f86; font-weight:600; }
.st-done { background:#d6efd9; color:#1d5e27; }
.st-failed { background:#f8d4d5; color:#8f1d22; font-weight:600; }
.st-skipped { background:#fbe7c4; color:#7a4d05; }
.st-blocked { background:#e6d6f0; color:#55276f; font-weight:600; }
.st-none { background:#fafafa; color:#b0b6bd; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; }
.chips { display:flex; flex-wrap:wrap; gap:8px; margin:10px 0; align-items:center; }
.chip { border:1px solid var(--line); border-radius:14px; padding:3px 12px; cursor:pointer;
  font:inherit; }
.chip b { font-size:15px; margin-left:4px; }
.chip.on { outline:2px solid #14324f; }
.filters { display:flex; flex-wrap:wrap; gap:14px; align-items:center; margin:12px 0;
  padding:8px 10px; background:#fff; border:1px solid var(--line); }
.filters select, .filters input { font:inherit; padding:2px 4px; }
.reason { max-width:420px; font-size:12.5px; color:#6b1d20; }
.reason.skip { color:#6b4a0a; }
.qa-good { color:#1a6b2a; } .qa-warn { color:#8a6d00; } .qa-bad { color:#a11; font-weight:bold; }
.muted { color:var(--muted); }
.note { color:var(--muted); font-style:italic; }
.warn { color:#8f1d22; }
figure { display:inline-block; margin:6px 14px 10px 0; vertical-align:top; background:#fff;
  border:1px solid var(--line); padding:6px; }
figure img { display:block; max-width:100%; height:auto; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; max-width:640px; }
pre { background:#fff; border:1px solid var(--line); padding:8px; overflow-x:auto;
  white-space:pre-wrap; font-size:12px; max-height:300px; }
.grid { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
.grid > div { flex:0 1 auto; }
img.broken { outline:3px dashed #d0393e; min-width:80px; min-height:40px; }
.broken-note { color:#8f1d22; font-size:12px; display:block; }
footer { color:var(--muted); font-size:12px; margin-top:30px; }
tr[hidden] { display:none; }
"""

# Marks every image that failed to load (visible to the reader, and checkable by a test
# through the DOM), then records the totals on <body>.
CHECK_IMAGES_JS = """
window.addEventListener('load', function () {
  var bad = 0;
  Array.prototype.forEach.call(document.images, function (img) {
    if (!img.complete || img.naturalWidth === 0) {
      bad += 1;
      img.classList.add('broken');
      var note = document.createElement('span');
      note.className = 'broken-note';
      note.textContent = 'image not found: ' + img.getAttribute('src');
      img.parentNode.insertBefore(note, img.nextSibling);
    }
  });
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken-images', String(bad));
});
"""

# Click a header to sort a table.sortable (numbers by data-sort when present).
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.querySelectorAll('thead th');
  heads.forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = !th.classList.contains('sorted-asc');
      heads.forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(r) {
        var c = r.cells[col];
        if (!c) return '';
        var k = c.getAttribute('data-sort');
        return k !== null ? (isNaN(parseFloat(k)) ? k : parseFloat(k)) : c.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' && typeof y === 'number') return asc ? x - y : y - x;
        return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

# Overview filters: state (any stage in that state), band, project, QA verdict, needs a
# look, free text. The filter
# lives in the URL fragment (#state=failed&band=6) so a filtered view can be bookmarked.
FILTER_JS = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#overview tbody tr'));
  var f = { state: document.getElementById('f-state'), band: document.getElementById('f-band'),
            project: document.getElementById('f-project'),
            verdict: document.getElementById('f-verdict'),
            look: document.getElementById('f-look'),
            text: document.getElementById('f-text') };
  var shown = document.getElementById('shown');
  function apply(updateHash) {
    var s = f.state.value, b = f.band.value, p = f.project.value,
        v = f.verdict.value, l = f.look.value,
        q = f.text.value.trim().toLowerCase(), n = 0;
    rows.forEach(function (tr) {
      var ok = (!s || (' ' + tr.dataset.states + ' ').indexOf(' ' + s + ' ') >= 0) &&
               (!b || (' ' + tr.dataset.band + ' ').indexOf(' ' + b + ' ') >= 0) &&
               (!p || tr.dataset.project === p) &&
               (!v || tr.dataset.verdict === v) && (!l || tr.dataset.look === l) &&
               (!q || tr.dataset.search.indexOf(q) >= 0);
      tr.hidden = !ok;
      if (ok) n += 1;
    });
    shown.textContent = String(n);
    document.querySelectorAll('.chip').forEach(function (c) {
      c.classList.toggle('on', c.dataset.state === s && s !== '');
    });
    if (updateHash) {
      var h = [];
      ['state', 'band', 'project', 'verdict', 'look', 'text'].forEach(function (k) {
        if (f[k].value) h.push(k + '=' + encodeURIComponent(f[k].value));
      });
      history.replaceState(null, '', h.length ? '#' + h.join('&') : location.pathname);
    }
  }
  function fromHash() {
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var i = kv.indexOf('=');
      if (i < 0) return;
      var k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1));
      if (f[k]) f[k].value = v;
    });
  }
  ['state', 'band', 'project', 'verdict', 'look'].forEach(function (k) {
    f[k].addEventListener('change', function () { apply(true); });
  });
  f.text.addEventListener('input', function () { apply(true); });
  document.querySelectorAll('.chip').forEach(function (c) {
    c.addEventListener('click', function () {
      f.state.value = f.state.value === c.dataset.state ? '' : c.dataset.state;
      apply(true);
    });
  });
  window.addEventListener('hashchange', function () { fromHash(); apply(false); });
  fromHash();
  apply(false);
  document.body.setAttribute('data-filter-ready', '1');
})();
"""
