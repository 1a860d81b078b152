//! A [`Chart`] rasterised (embedded-graphics: lines, rectangles, a bitmap font) and encoded as
//! PNG, at twice the chart's size so that it stays sharp on high-density screens.

use std::convert::Infallible;

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Polyline, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

use super::chart::{Anchor, Chart, Rgb, Run, Shape};

/// Pixels per chart unit.
pub const SCALE: f64 = 2.0;

/// An RGB8 image that embedded-graphics draws into; pixels outside it are dropped.
struct Canvas {
    width: u32,
    height: u32,
    /// Row-major RGB bytes: [height, width, 3].
    rgb: Vec<u8>,
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = 3 * (p.y as usize * self.width as usize + p.x as usize);
                self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

fn point(x: f64, y: f64) -> Point {
    Point::new((x * SCALE).round() as i32, (y * SCALE).round() as i32)
}

fn colour([r, g, b]: Rgb) -> Rgb888 {
    Rgb888::new(r, g, b)
}

fn rect(x: f64, y: f64, w: f64, h: f64) -> Rectangle {
    Rectangle::with_corners(point(x, y), point(x + w, y + h))
}

/// The chart of `runs` as PNG bytes (RGB, 8 bits).
pub fn render_png(runs: &[Run]) -> Result<Vec<u8>, png::EncodingError> {
    let chart = Chart::layout(runs);
    let (width, height) = ((chart.width * SCALE) as u32, (chart.height * SCALE) as u32);
    let mut canvas = Canvas {
        width,
        height,
        rgb: vec![255; 3 * width as usize * height as usize],
    };
    let font = MonoTextStyle::new(&FONT_10X20, Rgb888::BLACK);
    let stroke = SCALE.round() as u32;
    for shape in &chart.shapes {
        let Ok(()) = match shape {
            Shape::Frame { x, y, w, h } => rect(*x, *y, *w, *h)
                .into_styled(PrimitiveStyle::with_stroke(
                    Rgb888::new(0x99, 0x99, 0x99),
                    stroke / 2,
                ))
                .draw(&mut canvas),
            Shape::Swatch {
                x,
                y,
                w,
                h,
                colour: c,
            } => rect(*x, *y, *w, *h)
                .into_styled(PrimitiveStyle::with_fill(colour(*c)))
                .draw(&mut canvas),
            Shape::Label { x, y, anchor, text } => {
                let alignment = match anchor {
                    Anchor::Start => Alignment::Left,
                    Anchor::Middle => Alignment::Center,
                    Anchor::End => Alignment::Right,
                };
                let style = TextStyleBuilder::new()
                    .alignment(alignment)
                    .baseline(Baseline::Alphabetic)
                    .build();
                Text::with_text_style(text, point(*x, *y), font, style)
                    .draw(&mut canvas)
                    .map(|_| ())
            }
            Shape::Curve { points, colour: c } => {
                let points: Vec<Point> = points.iter().map(|&(x, y)| point(x, y)).collect();
                Polyline::new(&points)
                    .into_styled(PrimitiveStyle::with_stroke(colour(*c), stroke + 1))
                    .draw(&mut canvas)
            }
        };
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&canvas.rgb)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::chart::tests::{GRPO_LAST_REWARD, two_runs};
    use super::super::chart::{COLOURS, Chart, Shape};
    use super::*;

    /// Decode with the png crate's decoder: (width, height, RGB bytes).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        (info.width, info.height, rgb)
    }

    #[test]
    fn png_has_the_charts_size_curves_legend_and_text_where_the_layout_puts_them() {
        let runs = two_runs();
        let chart = Chart::layout(&runs);
        let (w, h, rgb) = decode(&render_png(&runs).unwrap());
        assert_eq!(
            (w, h),
            ((chart.width * SCALE) as u32, (chart.height * SCALE) as u32)
        );
        let at = |x: f64, y: f64| {
            let (px, py) = ((x * SCALE).round() as usize, (y * SCALE).round() as usize);
            let i = 3 * (py * w as usize + px);
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        assert_eq!(at(1.0, 1.0), [255, 255, 255], "white background");
        // the first run's last reward point, a little left along its rising segment
        let (x, y) = GRPO_LAST_REWARD;
        assert_eq!(at(x - 1.0, y + 1.0), COLOURS[0]);
        // the second run's legend swatch, filled in its colour
        let swatch = chart.shapes.iter().rev().find_map(|s| match s {
            Shape::Swatch { x, y, w, h, .. } => Some((x + w / 2.0, y + h / 2.0)),
            _ => None,
        });
        let (sx, sy) = swatch.unwrap();
        assert_eq!(at(sx, sy), COLOURS[1]);
        // the title "mean reward" left black pixels just above panel 1
        let title = chart.shapes.iter().find_map(|s| match s {
            Shape::Label { x, y, text, .. } if text == "mean reward" => Some((*x, *y)),
            _ => None,
        });
        let (tx, ty) = title.unwrap();
        let dark = (-30..30)
            .flat_map(|dx| (-6..0).map(move |dy| (tx + dx as f64, ty + dy as f64)))
            .filter(|&(x, y)| at(x, y) == [0, 0, 0])
            .count();
        assert!(dark > 10, "{dark} dark pixels in the title");
    }
}
