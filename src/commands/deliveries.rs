//! What `agentctl deliveries list` and `show` print. Everything in a delivery may come from an
//! unauthenticated sender (a rejected delivery's headers and body are stored as received), so
//! every field goes through the terminal sanitizer (`crate::text`) on its way out.

use crate::store::{DeliveryGroup, DeliveryRow, DeliverySummary, Verdict};
use crate::text::{for_terminal, for_terminal_line};
use std::fmt::Write;

const HEADER: &str = "     ID  RECEIVED              ROUTE          FORGE ID                              \
                      EVENT                         ITEM                      VERDICT    REASON";

/// `text` on one line, at most `width` characters (cut with `…`).
fn cell(text: &str, width: usize) -> String {
    let clean = for_terminal_line(text);
    if clean.chars().count() <= width {
        return clean.into_owned();
    }
    let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn line(out: &mut String, r: &DeliverySummary, follower: bool) {
    let id = if follower { format!("└ {}", r.id) } else { r.id.to_string() };
    let replay = r.replay_of.map(|o| format!(" [replay of {o}]")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{id:>7}  {:<20}  {:<13}  {:<36}  {:<28}  {:<24}  {:<9}  {}{replay}",
        cell(r.received_at.get(..19).unwrap_or(&r.received_at), 20),
        cell(r.route.as_str(), 13),
        cell(r.delivery_id.as_deref().unwrap_or("-"), 36),
        cell(&r.event_label(), 28),
        cell(r.item.as_deref().unwrap_or("-"), 24),
        cell(r.verdict.as_str(), 9),
        cell(&r.reason, 200),
    );
}

/// The table of `deliveries list`: each delivery, with its duplicates and replays under it.
pub fn render_list(groups: &[DeliveryGroup]) -> String {
    let mut out = format!("{HEADER}\n");
    for g in groups {
        line(&mut out, &g.head, false);
        for f in &g.followers {
            line(&mut out, f, true);
        }
    }
    out
}

/// `deliveries show`: the decision, headers, payload, and the rows that followed it.
pub fn render_show(row: &DeliveryRow, followers: &[DeliverySummary]) -> String {
    let mut out = String::new();
    let summary = serde_json::to_string_pretty(&row.summary).expect("a summary serializes");
    let _ = writeln!(out, "{}", for_terminal(&summary));
    if row.summary.verdict == Verdict::Rejected && row.summary.event.is_some() {
        let _ = writeln!(out, "event: from the delivery's header, unverified");
    }
    let _ = writeln!(out, "verification: {}", for_terminal_line(&row.verification));
    let _ = writeln!(out, "headers:");
    for (k, v) in &row.headers {
        let _ = writeln!(out, "  {}: {}", for_terminal_line(k), for_terminal_line(v));
    }
    match &row.body {
        Some(body) => {
            if row.body_stored {
                let _ = writeln!(out, "payload ({} bytes):", row.body_size);
            } else {
                let _ = writeln!(out, "payload (first {} of {} bytes):", body.len(), row.body_size);
            }
            let text = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => serde_json::to_string_pretty(&v).expect("a JSON value serializes"),
                Err(_) => String::from_utf8_lossy(body).into_owned(),
            };
            let _ = writeln!(out, "{}", for_terminal(&text));
        }
        None if row.body_size == 0 => {
            let _ = writeln!(out, "payload: none (refused from its headers, before a body was read, or empty)");
        }
        None => {
            let _ = writeln!(out, "payload: not kept ({} bytes; rejected deliveries are capped)", row.body_size);
        }
    }
    if !followers.is_empty() {
        let _ = writeln!(out, "followed by:");
        for f in followers {
            let what = match f.replay_of {
                Some(o) => format!("replay of {o}"),
                None => f.verdict.to_string(),
            };
            let _ = writeln!(out, "  {} {}: {}", f.id, cell(&what, 40), cell(&f.reason, 200));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: i64, verdict: Verdict, replay_of: Option<i64>) -> DeliverySummary {
        DeliverySummary {
            id,
            received_at: "2026-12-01T20:00:00Z".into(),
            route: crate::store::DeliveryRoute::Github,
            delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            event: Some("issues\u{1b}[2J".into()),
            action: None,
            item: None,
            verdict,
            reason: "signature does not match\u{1b}]0;owned\u{7}".into(),
            http_status: 401,
            task_id: None,
            replay_of,
            instance: None,
        }
    }

    /// A rejected delivery's body and headers are printed with their control characters gone;
    /// the event from its header is marked unverified.
    #[test]
    fn show_and_list_print_no_control_characters() {
        let row = DeliveryRow {
            summary: summary(7, Verdict::Rejected, None),
            headers: vec![("x-evil".into(), "a\u{9b}31mb\u{1b}c".into())],
            body: Some(b"not json \x1b[31mred\x1b[0m\r\nline two\x07".to_vec()),
            body_size: 40,
            body_stored: true,
            token_fp: None,
            verification: "bad_signature".into(),
        };
        let shown = render_show(&row, &[summary(9, Verdict::Rejected, Some(7))]);
        let listed = render_list(&[DeliveryGroup {
            head: row.summary.clone(),
            followers: vec![summary(9, Verdict::Queued, Some(7))],
        }]);
        for out in [&shown, &listed] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        }
        assert!(shown.contains("line two"), "{shown}");
        assert!(listed.contains("issues[2J (unverified)"), "{listed}");
        assert!(listed.contains("72d3162e-cc78-11e3-81ab-4c9367dc0958"), "the forge id is listed: {listed}");
        assert!(listed.contains("└ 9") && listed.contains("[replay of 7]"), "{listed}");
    }
}
