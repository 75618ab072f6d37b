//! `rbuild images` and the table/size/age formatting shared by the image commands.

use super::template::GoTemplate;
use super::ImagesArgs;
use anyhow::Context;
use rbuild_layerfs::image::parse_rfc3339;
use rbuild_layerfs::store::{normalize_tag, split_tag};
use rbuild_layerfs::{Image, Store};
use std::process::ExitCode;

/// One row of `rbuild images`, in docker's `--format json` shape.
fn row_json(image: &Image, repo: &str, tag: &str, size: u64, no_trunc: bool) -> serde_json::Value {
    let created = image.config.created().clone().unwrap_or_default();
    let created_secs = parse_rfc3339(&created);
    serde_json::json!({
        "Containers": "N/A",
        "CreatedAt": created_secs.map(format_utc).unwrap_or_default(),
        "CreatedSince": created_secs.map(human_since).unwrap_or_else(|| "N/A".into()),
        "Digest": "<none>",
        "ID": if no_trunc { image.id().to_string() } else { image.id().short().to_string() },
        "Repository": repo,
        "SharedSize": "N/A",
        "Size": human_size(size),
        "Tag": tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(size),
    })
}

/// `rbuild images [-q] [--format json|TEMPLATE] [REPOSITORY[:TAG]]`.
pub fn images(store: &Store, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let mut listed = store.list_images().context("listing images")?;
    // Newest first, as docker does.
    listed.sort_by_key(|(img, _)| {
        std::cmp::Reverse(
            img.config
                .created()
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(0),
        )
    });
    let filter = args.repository.as_deref().map(|r| {
        let explicit_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
        let norm = normalize_tag(r).unwrap_or_else(|_| r.to_string());
        let (repo, tag) = split_tag(&norm);
        (repo.to_string(), explicit_tag.then(|| tag.to_string()))
    });
    let filters = args
        .filter
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    let mut seen_ids = Vec::new();
    let mut layer_sizes: std::collections::HashMap<rbuild_layerfs::Digest, u64> =
        std::collections::HashMap::new();
    for (image, tags) in &listed {
        // Images share base layers: measure each layer once.
        let size = (0..image.manifest.layers().len())
            .map(|i| {
                let key = image.diff_ids().get(i).cloned();
                match key.as_ref().and_then(|k| layer_sizes.get(k)) {
                    Some(s) => *s,
                    None => {
                        let s = store.layer_size(image, i);
                        if let Some(k) = key {
                            layer_sizes.insert(k, s);
                        }
                        s
                    }
                }
            })
            .sum();
        let names: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| {
                    let (r, g) = split_tag(t);
                    (r.to_string(), g.to_string())
                })
                .collect()
        };
        for (repo, tag) in names {
            if let Some((want_repo, want_tag)) = &filter {
                if *want_repo != repo || want_tag.as_ref().is_some_and(|t| *t != tag) {
                    continue;
                }
            }
            if !filters.iter().all(|f| f.matches(image, tags, &repo, &tag)) {
                continue;
            }
            if args.quiet {
                if !seen_ids.contains(image.id()) {
                    seen_ids.push(image.id().clone());
                    if args.no_trunc {
                        println!("{}", image.id());
                    } else {
                        println!("{}", image.id().short());
                    }
                }
                continue;
            }
            rows.push(row_json(image, &repo, &tag, size, args.no_trunc));
        }
    }
    if args.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    match args.format.as_deref() {
        Some("json") => {
            for r in rows {
                println!("{r}");
            }
        }
        Some(t) if t != "table" => {
            let (table, body) = match t.strip_prefix("table") {
                Some(b) => (true, b.trim_start().to_string()),
                None => (false, t.to_string()),
            };
            let tmpl = GoTemplate::parse(&body.replace("\\t", "\t"))?;
            let mut lines = Vec::new();
            if table {
                lines.push(tmpl.render(&header_json())?);
            }
            for r in &rows {
                lines.push(tmpl.render(r)?);
            }
            if table {
                print_table(lines.iter().map(|l| split_cells(l)).collect());
            } else {
                for l in lines {
                    println!("{l}");
                }
            }
        }
        _ => {
            let mut table = vec![vec![
                "REPOSITORY".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
            ]];
            for r in rows {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                table.push(vec![
                    s("Repository"),
                    s("Tag"),
                    s("ID"),
                    s("CreatedSince"),
                    s("Size"),
                ]);
            }
            print_table(table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One `--filter KEY=VALUE` of `rbuild images`.
enum Filter {
    Dangling(bool),
    Reference(String),
    Label(String, Option<String>),
}

impl Filter {
    fn parse(text: &str) -> anyhow::Result<Filter> {
        let (key, value) = text
            .split_once('=')
            .with_context(|| format!("--filter {text:?}: expected KEY=VALUE"))?;
        Ok(match key {
            "dangling" => match value {
                "true" | "1" => Filter::Dangling(true),
                "false" | "0" => Filter::Dangling(false),
                _ => anyhow::bail!("--filter dangling={value}: use true or false"),
            },
            "reference" => Filter::Reference(value.to_string()),
            "label" => match value.split_once('=') {
                Some((k, v)) => Filter::Label(k.to_string(), Some(v.to_string())),
                None => Filter::Label(value.to_string(), None),
            },
            _ => anyhow::bail!(
                "--filter {key}: unsupported filter; use dangling, reference or label"
            ),
        })
    }

    fn matches(&self, image: &Image, tags: &[String], repo: &str, tag: &str) -> bool {
        match self {
            Filter::Dangling(want) => tags.is_empty() == *want,
            Filter::Reference(pattern) => {
                !tags.is_empty()
                    && (glob_match(pattern, repo) || glob_match(pattern, &format!("{repo}:{tag}")))
            }
            Filter::Label(key, value) => {
                let labels = image
                    .config
                    .config()
                    .as_ref()
                    .and_then(|c| c.labels().clone())
                    .unwrap_or_default();
                match (labels.get(key), value) {
                    (Some(v), Some(want)) => v == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
            }
        }
    }
}

/// Shell-style matching with `*` (any run of characters except `/`) and `?`.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

fn header_json() -> serde_json::Value {
    serde_json::json!({
        "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
        "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY", "SharedSize": "SHARED SIZE",
        "Size": "SIZE", "Tag": "TAG", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
    })
}

fn split_cells(line: &str) -> Vec<String> {
    line.split('\t').map(str::to_string).collect()
}

/// Prints rows as docker's tabwriter does (min width 10, padding 3).
pub fn print_table(rows: Vec<Vec<String>>) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = (widths[i] + 3).max(10);
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Docker's human size: three significant digits, decimal units (`4.26MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// Docker's "2 hours ago".
pub fn human_since(epoch_secs: i64) -> String {
    format!("{} ago", human_duration_since(epoch_secs))
}

/// Docker's "2 hours": the time from `epoch_secs` until now.
pub fn human_duration_since(epoch_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(epoch_secs);
    human_duration(now - epoch_secs)
}

fn human_duration(secs: i64) -> String {
    let hours = (secs as f64 / 3600.0).round() as i64;
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// `2024-01-02 03:04:05 +0000 UTC`, as docker prints CreatedAt.
pub fn format_utc(epoch_secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_secs.max(0) as u64);
    let s = rbuild_layerfs::image::rfc3339(t);
    format!("{} {} +0000 UTC", &s[..10], &s[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_look_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_345), "12.3kB");
        assert_eq!(human_size(123_456), "123kB");
        assert_eq!(human_size(2_000_000_000), "2GB");
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 +0000 UTC");
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("*/app:1.?", "team/app:1.0"));
        assert!(!glob_match("*", "team/app"));
        assert!(!glob_match("busy", "busybox"));
    }
}
