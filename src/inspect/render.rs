//! Pictures of attention: a self-contained HTML head view, SVG and PNG heatmaps.
//!
//! Everything is written from scratch (inline CSS/JS, no external resources, own PNG encoder),
//! so the files open offline in any browser.
//!
//! ```
//! use gpt2::inspect::AttentionView;
//! use ndarray::Array3;
//! // one layer, one head, two tokens
//! let map = Array3::from_shape_vec((1, 2, 2), vec![1.0, 0.0, 0.25, 0.75]).unwrap();
//! let view = AttentionView::new(vec!["Hello".into(), "Ġworld".into()], vec![map]).unwrap();
//! assert!(view.to_html("demo").contains("<!DOCTYPE html>"));
//! assert!(view.heatmap_svg(0, 0).unwrap().starts_with("<svg"));
//! assert_eq!(&view.heatmap_png(0, 0, 8).unwrap()[1..4], b"PNG");
//! ```

use std::fmt::Write as _;
use std::path::Path;

use ndarray::{Array3, ArrayView2};
use serde_json::json;

use super::maps::attention_maps;
use super::png::encode_indexed;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Gpt2;
use crate::tokenizer::Tokenizer;

/// Largest heatmap side in pixels.
pub const MAX_IMAGE_SIDE: usize = 16384;

/// The colour of an attention weight: white (0) → light blue (0.5) → dark blue (1); values are
/// clamped to `[0, 1]`.
pub fn colormap(v: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 3] = [[247.0, 251.0, 255.0], [107.0, 174.0, 214.0], [8.0, 48.0, 107.0]];
    let x = v.clamp(0.0, 1.0) * 2.0;
    let i = (x as usize).min(1);
    let f = x - i as f32;
    std::array::from_fn(|k| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8)
}

const GRID: [u8; 3] = [200, 200, 200];
const LEVELS: usize = 255;

/// A palette image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Colours (at most 256).
    pub palette: Vec<[u8; 3]>,
    /// Row-major palette indices `[height, width]`.
    pub pixels: Vec<u8>,
}

/// Rasterises `map [Tq, Tk]` as palette indices: `cell`×`cell` squares separated by 1-pixel grid
/// lines (rows = queries, columns = keys). Palette index 255 is the grid colour, index `k < 255`
/// is [`colormap`]`(k / 254)`.
pub fn heatmap_pixels(map: ArrayView2<'_, f32>, cell: usize) -> Result<Raster> {
    let (tq, tk) = map.dim();
    if tq == 0 || tk == 0 {
        return Err(Error::EmptyInput(format!("heatmap of shape [{tq}, {tk}]")));
    }
    if cell == 0 {
        return Err(Error::arg("cell", "must be at least 1 pixel"));
    }
    if map.iter().any(|v| !v.is_finite()) {
        return Err(Error::arg("map", "contains a non-finite value"));
    }
    // `n · (cell + 1) + 1` pixels per side, checked: `cell` comes from the user (usize::MAX
    // must be an error, not an overflow panic or a wrapped small size)
    let side = |n: usize| cell.checked_add(1).and_then(|c| n.checked_mul(c)).and_then(|x| x.checked_add(1));
    let (w, h) = match (side(tk), side(tq)) {
        (Some(w), Some(h)) if w <= MAX_IMAGE_SIDE && h <= MAX_IMAGE_SIDE => (w, h),
        (w, h) => {
            let size = match (w, h) {
                (Some(w), Some(h)) => format!("{w}x{h} pixels"),
                _ => "more than usize::MAX pixels per side".to_string(),
            };
            return Err(Error::arg(
                "cell",
                format!(
                    "{cell} pixels per entry of a [{tq}, {tk}] map: the image would be {size} (max {MAX_IMAGE_SIDE} per side)"
                ),
            ));
        }
    };
    let mut palette: Vec<[u8; 3]> = (0..LEVELS).map(|k| colormap(k as f32 / (LEVELS - 1) as f32)).collect();
    palette.push(GRID);
    let mut pixels = vec![LEVELS as u8; w * h];
    for ((i, j), &v) in map.indexed_iter() {
        let level = (v.clamp(0.0, 1.0) * (LEVELS - 1) as f32).round() as u8;
        for y in 0..cell {
            let row = (i * (cell + 1) + 1 + y) * w + j * (cell + 1) + 1;
            pixels[row..row + cell].fill(level);
        }
    }
    Ok(Raster { width: w, height: h, palette, pixels })
}

/// PNG heatmap of `map [Tq, Tk]` (rows = queries, columns = keys), `cell` pixels per entry.
pub fn heatmap_png(map: ArrayView2<'_, f32>, cell: usize) -> Result<Vec<u8>> {
    let r = heatmap_pixels(map, cell)?;
    encode_indexed(r.width, r.height, &r.palette, &r.pixels)
}

fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push_str(&format!("&#x{:X};", 0x2400 + (c as u32).min(0x20))),
            c => out.push(c),
        }
    }
    out
}

/// SVG heatmap of `map [Tq, Tk]` with query labels on the left and key labels on top.
pub fn heatmap_svg(map: ArrayView2<'_, f32>, row_labels: &[String], col_labels: &[String]) -> Result<String> {
    let (tq, tk) = map.dim();
    if tq == 0 || tk == 0 {
        return Err(Error::EmptyInput(format!("heatmap of shape [{tq}, {tk}]")));
    }
    if row_labels.len() != tq || col_labels.len() != tk {
        return Err(Error::Shape(format!(
            "{} row and {} column labels for a [{tq}, {tk}] map",
            row_labels.len(),
            col_labels.len()
        )));
    }
    if map.iter().any(|v| !v.is_finite()) {
        return Err(Error::arg("map", "contains a non-finite value"));
    }
    const CELL: usize = 24;
    let chars = |l: &[String]| l.iter().map(|s| s.chars().count()).max().unwrap_or(0).min(24);
    // monospace 12px ≈ 7.2 px per character; column labels are rotated by -60°
    let left = 12 + 8 * chars(row_labels);
    let top = 16 + 7 * chars(col_labels);
    let (w, h) = (left + tk * CELL + 10 + 4 * chars(col_labels), top + tq * CELL + 10);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"monospace\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    for (j, l) in col_labels.iter().enumerate() {
        let x = left + j * CELL + CELL / 2;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{}\" transform=\"rotate(-60 {x} {})\">{}</text>",
            top - 4,
            top - 4,
            escape_xml(l)
        );
    }
    for (i, l) in row_labels.iter().enumerate() {
        let y = top + i * CELL + CELL / 2 + 4;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">{}</text>", left - 6, escape_xml(l));
    }
    for ((i, j), &v) in map.indexed_iter() {
        let [r, g, b] = colormap(v);
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"rgb({r},{g},{b})\" stroke=\"#ccc\">\
             <title>{} → {}: {v:.4}</title></rect>",
            left + j * CELL,
            top + i * CELL,
            escape_xml(&row_labels[i]),
            escape_xml(&col_labels[j]),
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// Attention maps of one text: token labels plus per-layer `[NH, T, T]` probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionView {
    tokens: Vec<String>,
    maps: Vec<Array3<f32>>,
}

impl AttentionView {
    /// Checks shapes: every map is `[NH, T, T]` with the same `NH`, `T = tokens.len() > 0`, and
    /// every value is finite.
    pub fn new(tokens: Vec<String>, maps: Vec<Array3<f32>>) -> Result<Self> {
        let t = tokens.len();
        if t == 0 || maps.is_empty() {
            return Err(Error::EmptyInput(format!("{t} tokens, {} layers", maps.len())));
        }
        let nh = maps[0].dim().0;
        for (l, m) in maps.iter().enumerate() {
            if m.dim() != (nh, t, t) || nh == 0 {
                return Err(Error::Shape(format!("layer {l} map is {:?}, expected [{nh}, {t}, {t}]", m.shape())));
            }
            if m.iter().any(|v| !v.is_finite()) {
                return Err(Error::arg("maps", format!("layer {l} contains a non-finite value")));
            }
        }
        Ok(AttentionView { tokens, maps })
    }

    /// Runs `model` on `text` (GPT-2 BPE) and keeps its attention maps, labelled in `Ġ` form.
    pub fn from_text(model: &Gpt2, tokenizer: &Tokenizer, text: &str) -> Result<Self> {
        let ids = tokenizer.encode(text);
        if ids.is_empty() {
            return Err(Error::EmptyInput("the text has no tokens".into()));
        }
        let maps = attention_maps(model, &ids)?;
        Self::new(tokenizer.token_strings(&ids)?, maps)
    }

    /// Token labels.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Per-layer maps `[NH, T, T]`.
    pub fn maps(&self) -> &[Array3<f32>] {
        &self.maps
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.maps.len()
    }

    /// Number of heads.
    pub fn n_head(&self) -> usize {
        self.maps[0].dim().0
    }

    /// The `[T, T]` map of one layer and head.
    pub fn map(&self, layer: usize, head: usize) -> Result<ArrayView2<'_, f32>> {
        if layer >= self.n_layer() {
            return Err(Error::arg("layer", format!("{layer} >= {} layers", self.n_layer())));
        }
        if head >= self.n_head() {
            return Err(Error::arg("head", format!("{head} >= {} heads", self.n_head())));
        }
        Ok(self.maps[layer].index_axis(ndarray::Axis(0), head))
    }

    /// The maps as JSON: `{"tokens": [...], "attentions": [layer][head][query][key]}`, weights
    /// rounded to 5 decimals.
    pub fn to_json(&self) -> serde_json::Value {
        let round = |v: f32| ((v as f64) * 1e5).round() / 1e5;
        let att: Vec<Vec<Vec<Vec<f64>>>> = self
            .maps
            .iter()
            .map(|m| {
                m.outer_iter()
                    .map(|h| h.outer_iter().map(|r| r.iter().map(|&v| round(v)).collect()).collect())
                    .collect()
            })
            .collect();
        json!({ "tokens": self.tokens, "attentions": att })
    }

    /// A self-contained HTML page: layer/head selectors, a line view (query → key, opacity =
    /// weight; hover a token to isolate it), the weight matrix with values on hover, and a grid of
    /// every layer × head (click to select). No external resources.
    pub fn to_html(&self, title: &str) -> String {
        // `<` is escaped so the JSON can never close the <script> element.
        let data = self.to_json().to_string().replace('<', "\\u003c");
        fill_template(HTML_TEMPLATE, &[("TITLE", &escape_xml(title)), ("DATA", &data)])
    }

    /// SVG heatmap of one layer and head, labelled with the tokens.
    pub fn heatmap_svg(&self, layer: usize, head: usize) -> Result<String> {
        heatmap_svg(self.map(layer, head)?, &self.tokens, &self.tokens)
    }

    /// PNG heatmap of one layer and head (`cell` pixels per weight).
    pub fn heatmap_png(&self, layer: usize, head: usize, cell: usize) -> Result<Vec<u8>> {
        heatmap_png(self.map(layer, head)?, cell)
    }

    /// Writes [`to_html`](Self::to_html) to `path` (atomically).
    pub fn write_html(&self, path: &Path, title: &str) -> Result<()> {
        let html = self.to_html(title);
        write_atomic(path, |w| std::io::Write::write_all(w, html.as_bytes()))
    }

    /// Writes [`heatmap_svg`](Self::heatmap_svg) to `path` (atomically).
    pub fn write_svg(&self, path: &Path, layer: usize, head: usize) -> Result<()> {
        let svg = self.heatmap_svg(layer, head)?;
        write_atomic(path, |w| std::io::Write::write_all(w, svg.as_bytes()))
    }

    /// Writes [`heatmap_png`](Self::heatmap_png) to `path` (atomically).
    pub fn write_png(&self, path: &Path, layer: usize, head: usize, cell: usize) -> Result<()> {
        let png = self.heatmap_png(layer, head, cell)?;
        write_atomic(path, |w| std::io::Write::write_all(w, &png))
    }
}

/// Replaces every `{{KEY}}` of `template` in one pass (inserted text is never re-scanned).
fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}").and_then(|e| values.iter().find(|(k, _)| *k == &after[..e]).map(|(_, v)| (e, v))) {
            Some((e, v)) => {
                out.push_str(v);
                rest = &after[e + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

const HTML_TEMPLATE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{TITLE}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
#controls { margin-bottom: 1em; } select { margin: 0 1em 0 0.3em; }
#views { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }
#lines text { font-family: monospace; font-size: 13px; cursor: pointer; }
table.m { border-collapse: collapse; font-family: monospace; font-size: 12px; }
table.m td { width: 22px; height: 22px; border: 1px solid #ddd; padding: 0; }
table.m th { font-weight: normal; padding: 0 4px; white-space: pre; }
table.m thead th { writing-mode: vertical-rl; transform: rotate(180deg); vertical-align: bottom; height: 6em; }
table.m th.row { text-align: right; }
#grid td { padding: 2px; text-align: center; font-size: 11px; }
#grid canvas { border: 1px solid #ccc; cursor: pointer; image-rendering: pixelated; }
#grid canvas.sel { border: 2px solid #c33; }
#status { color: #666; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<div id="controls">Layer<select id="layer"></select>Head<select id="head"></select></div>
<p id="status"></p>
<div id="views"><svg id="lines" xmlns="http://www.w3.org/2000/svg"></svg><div id="matrix"></div></div>
<h2>All layers and heads (rows: layers, columns: heads; click one)</h2>
<table id="grid"></table>
<script id="gpt2-data" type="application/json">{{DATA}}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("gpt2-data").textContent);
const A = D.attentions, TOK = D.tokens, L = A.length, H = A[0].length, T = TOK.length;
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
const SVGNS = "http://www.w3.org/2000/svg";
function color(v) {
  const s = [[247, 251, 255], [107, 174, 214], [8, 48, 107]];
  const x = Math.max(0, Math.min(1, v)) * 2, i = Math.min(1, Math.floor(x)), f = x - i;
  return "rgb(" + s[i].map((c, k) => Math.round(c + (s[i + 1][k] - c) * f)).join(",") + ")";
}
function el(tag, attrs, text) {
  const e = tag === "svg" || tag === "line" || tag === "text" ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function current() {
  const l = +layerSel.value;
  if (headSel.value !== "mean") return A[l][+headSel.value];
  return A[l][0].map((row, i) => row.map((_, j) => A[l].reduce((s, h) => s + h[i][j], 0) / H));
}
function drawLines(M, focus) {
  const svg = document.getElementById("lines"), rowH = 20, w = 420;
  svg.replaceChildren();
  svg.setAttribute("width", w); svg.setAttribute("height", T * rowH + 30);
  svg.appendChild(el("text", { x: 150, y: 14, "text-anchor": "end", fill: "#888" }, "query"));
  svg.appendChild(el("text", { x: 270, y: 14, fill: "#888" }, "key"));
  for (let i = 0; i < T; i++) {
    if (focus !== null && focus !== i) continue;
    for (let j = 0; j < T; j++) {
      if (M[i][j] < 0.005) continue;
      svg.appendChild(el("line", { x1: 155, y1: 30 + i * rowH, x2: 265, y2: 30 + j * rowH,
        stroke: "#1f5fa8", "stroke-width": 2, "stroke-opacity": M[i][j].toFixed(3) }));
    }
  }
  for (let i = 0; i < T; i++) {
    const q = el("text", { x: 150, y: 34 + i * rowH, "text-anchor": "end", "font-weight": focus === i ? "bold" : "normal" }, TOK[i]);
    q.addEventListener("mouseenter", () => drawLines(M, i));
    q.addEventListener("mouseleave", () => drawLines(M, null));
    svg.appendChild(q);
    svg.appendChild(el("text", { x: 270, y: 34 + i * rowH }, TOK[i]));
  }
}
function drawMatrix(M) {
  const t = el("table", { class: "m" }), head = el("thead"), hr = el("tr");
  hr.appendChild(el("th"));
  TOK.forEach(s => hr.appendChild(el("th", {}, s)));
  head.appendChild(hr); t.appendChild(head);
  const body = el("tbody");
  for (let i = 0; i < T; i++) {
    const tr = el("tr");
    tr.appendChild(el("th", { class: "row" }, TOK[i]));
    for (let j = 0; j < T; j++) {
      const td = el("td", { title: TOK[i] + " \u2192 " + TOK[j] + ": " + M[i][j].toFixed(4) });
      td.style.background = color(M[i][j]);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  t.appendChild(body);
  document.getElementById("matrix").replaceChildren(t);
}
function drawGrid() {
  const grid = document.getElementById("grid"), px = Math.max(2, Math.floor(96 / T));
  grid.replaceChildren();
  for (let l = 0; l < L; l++) {
    const tr = el("tr");
    tr.appendChild(el("td", {}, "layer " + l));
    for (let h = 0; h < H; h++) {
      const td = el("td"), c = el("canvas", { width: T * px, height: T * px, title: "layer " + l + ", head " + h });
      const g = c.getContext("2d");
      for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) { g.fillStyle = color(A[l][h][i][j]); g.fillRect(j * px, i * px, px, px); }
      if (l === +layerSel.value && String(h) === headSel.value) c.className = "sel";
      c.addEventListener("click", () => { layerSel.value = l; headSel.value = h; update(); });
      td.appendChild(c); td.appendChild(el("div", {}, "head " + h));
      tr.appendChild(td);
    }
    grid.appendChild(tr);
  }
}
function update() {
  const M = current();
  drawLines(M, null); drawMatrix(M); drawGrid();
  document.getElementById("status").textContent =
    "layers=" + L + " heads=" + H + " tokens=" + T + " | showing layer " + layerSel.value + ", head " + headSel.value;
}
for (let l = 0; l < L; l++) layerSel.appendChild(el("option", { value: l }, String(l)));
for (let h = 0; h < H; h++) headSel.appendChild(el("option", { value: h }, String(h)));
headSel.appendChild(el("option", { value: "mean" }, "mean of heads"));
layerSel.addEventListener("change", update); headSel.addEventListener("change", update);
update();
document.body.dataset.ready = "1";
</script>
</body>
</html>
"##;
