//! A minimal PNG encoder: 8-bit palette or RGB images, one zlib stream compressed with fixed
//! Huffman codes (RFC 1951 §3.2.6) and run/row matches — small files for heatmaps with flat
//! regions, no dependency.
//!
//! ```
//! use gpt2::inspect::png::encode_rgb;
//! let png = encode_rgb(2, 1, &[255, 0, 0, 0, 0, 255]).unwrap();
//! assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
//! ```

use crate::error::{Error, Result};

/// CRC-32 (ISO-HDLC, as in PNG chunks and gzip).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Adler-32 (the zlib stream checksum).
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// LSB-first bit writer for deflate.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    /// Appends the low `n` bits of `v`, least significant first.
    fn put(&mut self, v: u32, n: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Appends a Huffman code of `len` bits (codes are sent most significant bit first).
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u8; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/// Fixed-Huffman literal/length symbol `sym` (0..=287).
fn put_litlen(bits: &mut Bits, sym: u32) {
    match sym {
        0..=143 => bits.code(0x30 + sym, 8),
        144..=255 => bits.code(0x190 + sym - 144, 9),
        256..=279 => bits.code(sym - 256, 7),
        _ => bits.code(0xC0 + sym - 280, 8),
    }
}

/// A back-reference of `len` (3..=258) bytes at distance `dist` (1..=32768).
fn put_match(bits: &mut Bits, len: usize, dist: usize) {
    let li = LEN_BASE.iter().rposition(|&b| b as usize <= len).expect("len >= 3");
    put_litlen(bits, 257 + li as u32);
    bits.put((len - LEN_BASE[li] as usize) as u32, LEN_EXTRA[li] as u32);
    let di = DIST_BASE.iter().rposition(|&b| b as usize <= dist).expect("dist >= 1");
    bits.code(di as u32, 5);
    bits.put((dist - DIST_BASE[di] as usize) as u32, DIST_EXTRA[di] as u32);
}

/// zlib stream of `data`: one final fixed-Huffman block; greedy matches at the distances in
/// `dists` (e.g. 1 for runs and the row length for repeated rows).
pub fn zlib_compress(data: &[u8], dists: &[usize]) -> Vec<u8> {
    let mut bits = Bits { out: vec![0x78, 0x01], acc: 0, n: 0 };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = 01, fixed Huffman
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0usize);
        for &d in dists {
            if d == 0 || d > i || d > 32768 {
                continue;
            }
            let max = (data.len() - i).min(258);
            let len = (0..max).take_while(|&k| data[i + k] == data[i + k - d]).count();
            if len > best.0 {
                best = (len, d);
            }
        }
        if best.0 >= 3 {
            put_match(&mut bits, best.0, best.1);
            i += best.0;
        } else {
            put_litlen(&mut bits, data[i] as u32);
            i += 1;
        }
    }
    put_litlen(&mut bits, 256); // end of block
    let mut out = bits.finish();
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

fn encode(
    width: usize,
    height: usize,
    color_type: u8,
    bpp: usize,
    palette: &[[u8; 3]],
    pixels: &[u8],
) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || width > (1 << 24) || height > (1 << 24) {
        return Err(Error::arg("size", format!("{width}x{height} is not a valid image size")));
    }
    if pixels.len() != width * height * bpp {
        return Err(Error::Shape(format!(
            "{} pixel bytes for a {width}x{height} image with {bpp} byte(s) per pixel",
            pixels.len()
        )));
    }
    let row = width * bpp;
    let mut raw = Vec::with_capacity((row + 1) * height);
    for r in pixels.chunks(row) {
        raw.push(0); // filter: none
        raw.extend_from_slice(r);
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]); // depth 8, deflate, filter 0, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    if !palette.is_empty() {
        chunk(&mut png, b"PLTE", &palette.concat());
    }
    chunk(&mut png, b"IDAT", &zlib_compress(&raw, &[bpp, row + 1]));
    chunk(&mut png, b"IEND", &[]);
    Ok(png)
}

/// PNG of an RGB image, `pixels` row-major `[height, width, 3]`.
pub fn encode_rgb(width: usize, height: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    encode(width, height, 2, 3, &[], pixels)
}

/// PNG of a palette image: `pixels` `[height, width]` are indices into `palette` (1..=256 colours).
pub fn encode_indexed(width: usize, height: usize, palette: &[[u8; 3]], pixels: &[u8]) -> Result<Vec<u8>> {
    if palette.is_empty() || palette.len() > 256 {
        return Err(Error::arg("palette", format!("{} colours (need 1..=256)", palette.len())));
    }
    if let Some(&bad) = pixels.iter().find(|&&p| p as usize >= palette.len()) {
        return Err(Error::arg("pixels", format!("index {bad} outside a palette of {}", palette.len())));
    }
    encode(width, height, 3, 1, palette, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xFFu8; 100_000];
        let (a, b) = big.iter().fold((1u64, 0u64), |(a, b), &x| ((a + x as u64) % 65521, (b + a + x as u64) % 65521));
        assert_eq!(adler32(&big), ((b << 16) | a) as u32);
    }
}
