//! Loss curves as SVG or PNG (no plotting dependency): train loss per step, optional
//! validation loss, axes with tick labels.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::inspect::png::encode_rgb;

/// Train and validation loss series, `(step, loss)`.
///
/// ```
/// use gpt2::train::plot::LossCurve;
/// let mut c = LossCurve::default();
/// for s in 0..50 { c.train.push((s, 5.0 / (1.0 + s as f32))); }
/// c.val.push((49, 0.2));
/// assert!(c.to_svg(640, 400).unwrap().starts_with("<svg"));
/// assert_eq!(&c.to_png(640, 400).unwrap()[1..4], b"PNG");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossCurve {
    /// Training loss per step.
    pub train: Vec<(usize, f32)>,
    /// Validation loss at the steps it was measured.
    pub val: Vec<(usize, f32)>,
}

const TRAIN_RGB: [u8; 3] = [31, 119, 180];
const VAL_RGB: [u8; 3] = [255, 127, 14];
const MARGIN_L: f64 = 60.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 30.0;
const MARGIN_B: f64 = 40.0;

/// "Nice" tick values covering `[lo, hi]` (about `n` of them).
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e6 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Data → pixel mapping.
struct Frame {
    w: f64,
    h: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        MARGIN_L + (x - self.x0) / (self.x1 - self.x0).max(1e-12) * (self.w - MARGIN_L - MARGIN_R)
    }
    fn py(&self, y: f64) -> f64 {
        self.h - MARGIN_B - (y - self.y0) / (self.y1 - self.y0).max(1e-12) * (self.h - MARGIN_T - MARGIN_B)
    }
}

impl LossCurve {
    fn frame(&self, width: usize, height: usize) -> Result<Frame> {
        if width < 160 || height < 120 {
            return Err(Error::arg("size", format!("{width}×{height} is too small (at least 160×120)")));
        }
        let pts: Vec<(f64, f64)> = self
            .train
            .iter()
            .chain(&self.val)
            .filter(|(_, l)| l.is_finite())
            .map(|&(s, l)| (s as f64, l as f64))
            .collect();
        if pts.is_empty() {
            return Err(Error::EmptyInput("no finite loss values to plot".into()));
        }
        let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in &pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        Ok(Frame { w: width as f64, h: height as f64, x0, x1, y0: (y0 - pad).max(0.0), y1: y1 + pad })
    }

    /// The curve as a standalone SVG document.
    pub fn to_svg(&self, width: usize, height: usize) -> Result<String> {
        let f = self.frame(width, height)?;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for t in ticks(f.y0, f.y1, 6) {
            let y = f.py(t);
            s += &format!(
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                MARGIN_L,
                f.w - MARGIN_R,
                MARGIN_L - 5.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        for t in ticks(f.x0, f.x1, 8) {
            let x = f.px(t);
            s += &format!(
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                MARGIN_T,
                f.h - MARGIN_B,
                f.h - MARGIN_B + 15.0,
                fmt_tick(t)
            );
        }
        s += &format!(
            "<rect x=\"{MARGIN_L}\" y=\"{MARGIN_T}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>\n",
            f.w - MARGIN_L - MARGIN_R,
            f.h - MARGIN_T - MARGIN_B
        );
        for (series, rgb, name) in [(&self.train, TRAIN_RGB, "train"), (&self.val, VAL_RGB, "val")] {
            let pts: Vec<String> = series
                .iter()
                .filter(|(_, l)| l.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x as f64), f.py(y as f64)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let col = format!("rgb({},{},{})", rgb[0], rgb[1], rgb[2]);
            s += &format!(
                "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                pts.join(" ")
            );
            let lx = if name == "train" { MARGIN_L + 10.0 } else { MARGIN_L + 70.0 };
            s += &format!(
                "<line x1=\"{lx}\" y1=\"15\" x2=\"{}\" y2=\"15\" stroke=\"{col}\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"19\">{name}</text>\n",
                lx + 20.0,
                lx + 24.0
            );
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step</text>\n</svg>\n",
            (MARGIN_L + f.w - MARGIN_R) / 2.0,
            f.h - 8.0
        );
        Ok(s)
    }

    /// The curve as a PNG (RGB), tick labels drawn with a built-in 3×5 digit font.
    pub fn to_png(&self, width: usize, height: usize) -> Result<Vec<u8>> {
        let f = self.frame(width, height)?;
        let mut c = Canvas { w: width, h: height, px: vec![255; width * height * 3] };
        let (l, r, t, b) = (MARGIN_L, f.w - MARGIN_R, MARGIN_T, f.h - MARGIN_B);
        for tk in ticks(f.y0, f.y1, 6) {
            let y = f.py(tk);
            c.line(l, y, r, y, [221, 221, 221], 1.0);
            let label = fmt_tick(tk);
            c.text(&label, l - 6.0 - 4.0 * 2.0 * label.len() as f64, y - 5.0, 2, [0, 0, 0]);
        }
        for tk in ticks(f.x0, f.x1, 8) {
            let x = f.px(tk);
            c.line(x, t, x, b, [221, 221, 221], 1.0);
            let label = fmt_tick(tk);
            c.text(&label, x - 4.0 * label.len() as f64, b + 6.0, 2, [0, 0, 0]);
        }
        for (x0, y0, x1, y1) in [(l, t, r, t), (l, b, r, b), (l, t, l, b), (r, t, r, b)] {
            c.line(x0, y0, x1, y1, [51, 51, 51], 1.0);
        }
        for (series, rgb) in [(&self.train, TRAIN_RGB), (&self.val, VAL_RGB)] {
            let pts: Vec<(f64, f64)> =
                series.iter().filter(|(_, l)| l.is_finite()).map(|&(x, y)| (f.px(x as f64), f.py(y as f64))).collect();
            for w in pts.windows(2) {
                c.line(w[0].0, w[0].1, w[1].0, w[1].1, rgb, 1.6);
            }
            if pts.len() == 1 {
                c.line(pts[0].0 - 2.0, pts[0].1, pts[0].0 + 2.0, pts[0].1, rgb, 3.0);
            }
        }
        encode_rgb(width, height, &c.px)
    }

    /// Writes [`to_svg`](Self::to_svg) to `path` atomically.
    pub fn save_svg(&self, path: impl AsRef<Path>, width: usize, height: usize) -> Result<()> {
        let svg = self.to_svg(width, height)?;
        write_atomic(path.as_ref(), |w| w.write_all(svg.as_bytes()))
    }

    /// Writes [`to_png`](Self::to_png) to `path` atomically.
    pub fn save_png(&self, path: impl AsRef<Path>, width: usize, height: usize) -> Result<()> {
        let png = self.to_png(width, height)?;
        write_atomic(path.as_ref(), |w| w.write_all(&png))
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

/// 3×5 glyphs for `0-9 . - e` (rows top to bottom, 3 bits each).
fn glyph(ch: char) -> Option<[u8; 5]> {
    Some(match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, rgb: [u8; 3], a: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 || a <= 0.0 {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (p, &c) in self.px[i..i + 3].iter_mut().zip(&rgb) {
            let old = *p as f64;
            *p = (old + (c as f64 - old) * a.min(1.0)).round() as u8;
        }
    }

    /// Anti-aliased line of the given width (distance-to-segment coverage).
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, rgb: [u8; 3], width: f64) {
        let half = width / 2.0;
        let (minx, maxx) = ((x0.min(x1) - half - 1.0).floor() as i64, (x0.max(x1) + half + 1.0).ceil() as i64);
        let (miny, maxy) = ((y0.min(y1) - half - 1.0).floor() as i64, (y0.max(y1) + half + 1.0).ceil() as i64);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = dx * dx + dy * dy;
        for y in miny..=maxy {
            for x in minx..=maxx {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let t = if len2 > 0.0 { (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let (cx, cy) = (x0 + t * dx, y0 + t * dy);
                let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
                self.blend(x, y, rgb, half + 0.5 - d);
            }
        }
    }

    fn text(&mut self, s: &str, x: f64, y: f64, scale: i64, rgb: [u8; 3]) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for (i, ch) in s.chars().enumerate() {
            let Some(g) = glyph(ch) else { continue };
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                let gx = x + (i as i64) * 4 * scale + col * scale + sx;
                                self.blend(gx, y + row as i64 * scale + sy, rgb, 1.0);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(2.31, 2.87, 6);
        assert!(t.len() >= 4 && t[0] >= 2.31 && *t.last().unwrap() <= 2.87);
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(1000.0), "1000");
    }

    #[test]
    fn png_is_encoded_and_bad_input_is_refused() {
        let c = LossCurve { train: (0..100).map(|s| (s, 3.0 - s as f32 * 0.02)).collect(), val: vec![] };
        let png = c.to_png(320, 200).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(LossCurve::default().to_png(320, 200).is_err());
        assert!(c.to_svg(10, 10).is_err());
    }
}
