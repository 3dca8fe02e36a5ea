// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail report --svg`: the retries-per-call and stall-time histograms
//! of the top callers, one row per caller, drawn with plotters' SVG
//! backend (no fonts or system libraries needed: text is left to the
//! viewer).

use anyhow::{Result, anyhow, bail};
use nofail_common::HIST_BUCKETS;
use plotters::prelude::*;

use crate::{
    model::hist,
    model::report::{CallerRow, Report},
};

const PANEL: (u32, u32) = (640, 260);

/// Label of log2 bucket `i` for the x axis.
fn bucket_label(i: usize, unit: fn(u64) -> String) -> String {
    let (lo, hi) = hist::bounds(i);
    match i {
        0 => "0".into(),
        1 => unit(1),
        _ if i + 1 == HIST_BUCKETS => format!("{}+", unit(lo)),
        _ => format!("{}-{}", unit(lo), unit(hi - 1)),
    }
}

/// One histogram panel: bars over the bucket range that holds data
/// (`skip_zero` leaves out the "0" bucket, e.g. calls that never slept).
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    h: &[u64; HIST_BUCKETS],
    unit: fn(u64) -> String,
    skip_zero: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {title}: {e}");
    let mut buckets = *h;
    if skip_zero {
        buckets[0] = 0;
    }
    let first = buckets.iter().position(|&n| n > 0).unwrap_or(0);
    let last = buckets.iter().rposition(|&n| n > 0).unwrap_or(0);
    // At least four buckets wide, so one bar does not fill the panel.
    let (lo, hi) = (first as u32, (last as u32).max(first as u32 + 3));
    let ymax = buckets.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).into_segmented(), 0u64..ymax + ymax / 10 + 1)
        .map_err(|e| err(&e))?;
    let label = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bucket_label(*i as usize, unit),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Every bucket labelled while that stays readable.
        .x_labels(((hi - lo + 1) as usize).min(10))
        .x_label_formatter(&label)
        .x_desc(x_desc)
        .y_desc("calls")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(0x2b, 0x6c, 0xb0).filled())
                .margin(3)
                .data(
                    (lo..=hi)
                        .map(|i| (i, buckets[i as usize]))
                        .filter(|(_, n)| *n > 0),
                ),
        )
        .map_err(|e| err(&e))?;
    Ok(())
}

/// The callers worth a picture: those that retried or slept first (the
/// report's order), at most `top`.
fn pick(report: &Report, top: usize) -> Vec<&CallerRow> {
    report
        .callers
        .iter()
        .filter(|r| r.counts.calls > 0)
        .take(top)
        .collect()
}

/// The whole SVG document.
pub fn render(report: &Report, top: usize) -> Result<String> {
    let rows = pick(report, top);
    if rows.is_empty() {
        bail!("the report has no finished calls to draw");
    }
    // --what-if: a third panel per caller, the stall had a free woken it.
    let cols = if report.what_if() { 3 } else { 2 };
    let mut svg = String::new();
    {
        let size = (PANEL.0 * cols as u32, PANEL.1 * rows.len() as u32 + 40);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the picture: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let title = format!(
            "nofail {}: vmalloc retry loops on {} ({:.1} s, mode {})",
            report.command, report.kernel, report.duration_s, report.mode
        );
        let root = root
            .titled(&title, ("sans-serif", 18))
            .map_err(|e| err(&e))?;
        let panels = root.split_evenly((rows.len(), cols));
        for (row, cells) in rows.iter().zip(panels.chunks(cols)) {
            let s = row.aggregate();
            panel(
                &cells[0],
                &format!(
                    "{}: retries per call ({} calls, {} retries)",
                    row.caller,
                    row.counts.calls,
                    row.retries()
                ),
                "NOFAIL retries in one call",
                &s.retries_hist,
                hist::count_unit,
                false,
            )?;
            panel(
                &cells[1],
                &format!(
                    "{}: stall per call ({} sleeps, {:.1} ms; {} calls never slept)",
                    row.caller,
                    row.counts.sleeps,
                    row.counts.slept_ns as f64 / 1e6,
                    s.slept_hist[0]
                ),
                "time slept in retry sleeps (calls that slept)",
                &s.slept_hist,
                hist::ns_unit,
                true,
            )?;
            if cols == 3 {
                let c = &row.counts;
                panel(
                    &cells[2],
                    &format!(
                        "what-if: {} of {} retries futile; {:.1} ms had a free woken it",
                        c.futile_retries,
                        c.futile_retries + c.freed_retries,
                        c.whatif_slept_ns as f64 / 1e6
                    ),
                    "retry sleep time had the first relevant free woken the call",
                    &s.whatif_hist,
                    hist::ns_unit,
                    true,
                )?;
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
