//! logs, container-inspect, top and stats.

use super::state::{self, ContainerState, Status};
use crate::cmd::Globals;
use anyhow::bail;
use serde_json::{json, Value};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Parses `--tail`: a number of lines, or "all".
pub fn parse_tail(s: &str) -> anyhow::Result<Option<u64>> {
    if s == "all" {
        return Ok(None);
    }
    match s.parse::<i64>() {
        // Docker shows everything for a negative count.
        Ok(n) => Ok(u64::try_from(n).ok()),
        Err(_) => bail!("invalid --tail {s:?}: use a number of lines or all"),
    }
}

/// The offset where the last `lines` lines of `f` (`len` bytes long) begin. A final line without
/// a newline counts as a line; the newline that ends the last line does not begin another.
fn tail_start<R: Read + Seek>(f: &mut R, len: u64, lines: u64) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    let mut found = 0u64;
    // The byte at len-1 is skipped when it is a newline (it ends the last line).
    let mut skip_last = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(std::io::SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                skip_last = false;
                continue;
            }
            if std::mem::take(&mut skip_last) {
                continue;
            }
            found += 1;
            if found == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// `rbuild logs [-f] [--tail N]`. The log holds the container's stdout and stderr as raw bytes,
/// both streams in one file, without times: everything is printed to stdout, and there is no
/// `--timestamps` or `--since`.
pub fn logs(g: &Globals, follow: bool, tail: Option<u64>, name: &str) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let c = state::find(&root, name)?;
    let path = c.dir(&root).join("log");
    let mut out = std::io::stdout().lock();
    let Ok(mut f) = std::fs::File::open(&path) else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(lines) = tail {
        let len = f.metadata()?.len();
        let start = tail_start(&mut f, len, lines)?;
        f.seek(std::io::SeekFrom::Start(start))?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !follow {
            break;
        }
        let running = c
            .reload(&root)
            .map(|s| s.effective_status() == Status::Running)
            .unwrap_or(false);
        if !running {
            // One last read for output written just before the exit.
            let pos = f.stream_position()?;
            f.seek(std::io::SeekFrom::Start(pos))?;
            let n = f.read(&mut buf)?;
            out.write_all(&buf[..n])?;
            if n == 0 {
                break;
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}

/// Docker-style inspect document for a container.
pub fn container_json(root: &Path, c: &ContainerState) -> Value {
    let status = c.effective_status();
    let dir = c.dir(root);
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Created": c.created,
        "Path": c.config.args.first(),
        "Args": c.config.args.get(1..).unwrap_or(&[]),
        "State": {
            "Status": status.as_str(),
            "Running": status == Status::Running,
            "Pid": if status == Status::Running { c.pid } else { 0 },
            "ExitCode": c.exit_code.unwrap_or(0),
            "OOMKilled": c.oom_killed,
            "Error": c.error.clone().unwrap_or_default(),
            "StartedAt": c.started_at,
            "FinishedAt": c.finished_at,
        },
        "Image": c.image_id,
        "ImageName": c.image,
        "LogPath": dir.join("log"),
        "Driver": c.driver,
        "Config": {
            "Hostname": c.config.hostname,
            "User": c.config.user,
            "Env": c.config.env,
            "Cmd": c.config.args.get(c.config.entrypoint.len()..).unwrap_or(&[]),
            "Entrypoint": c.config.entrypoint,
            "WorkingDir": c.config.cwd,
            "Tty": c.config.tty,
            "OpenStdin": c.config.interactive,
            "Image": c.image,
        },
        "HostConfig": {
            "AutoRemove": c.config.auto_remove,
            "NetworkMode": c.config.network,
            "ReadonlyRootfs": c.config.readonly,
            "Binds": c.config.mounts.iter().map(|m| format!("{}:{}{}", m.source.display(), m.target, if m.readonly { ":ro" } else { "" })).collect::<Vec<_>>(),
            "Memory": c.config.limits.memory.unwrap_or(0),
            "NanoCpus": c.config.limits.cpus.map(|x| (x * 1e9) as u64).unwrap_or(0),
            "CpuShares": c.config.limits.cpu_shares.unwrap_or(0),
            "CpusetCpus": c.config.limits.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": c.config.limits.pids,
            "BlkioWeight": c.config.limits.blkio_weight.unwrap_or(0),
        },
        "GraphDriver": {
            "Name": c.driver,
            "Data": {
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("merged"),
            }
        },
        "Cgroup": c.cgroup,
    })
}

/// The inspect document of container `name` in the store at `root`, if there is one (for
/// `rbuild inspect`, which looks at images first).
pub fn inspect_value(root: &Path, name: &str) -> Option<Value> {
    let c = state::find(root, name).ok()?;
    Some(container_json(root, &c))
}

/// `rbuild container-inspect`.
pub fn inspect(g: &Globals, format: Option<&str>, names: &[String]) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let template = format
        .map(crate::cmd::image::template::GoTemplate::parse)
        .transpose()?;
    let mut docs = Vec::new();
    for n in names {
        let c = state::find(&root, n)?;
        docs.push(container_json(&root, &c));
    }
    match template {
        Some(t) => {
            for d in &docs {
                println!("{}", t.render(d)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(docs))?),
    }
    Ok(ExitCode::SUCCESS)
}

fn running(root: &Path, name: &str) -> anyhow::Result<ContainerState> {
    let c = state::find(root, name)?;
    if !c.is_running() {
        bail!("container {name} is not running");
    }
    Ok(c)
}

/// (pid, ppid, uid, cpu ticks, command) of a process.
fn proc_info(pid: i32) -> Option<(i32, i32, u32, u64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!(
                "[{}]",
                stat.split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map(|(n, _)| n)
                    .unwrap_or("")
            )
        });
    Some((pid, ppid, uid, ticks, cmd))
}

/// `pid` and every process descended from it (from each process's parent in /proc).
fn process_tree(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, proc_info(p)?.1)))
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// `rbuild top`: the container's processes (host pids), from its cgroup.
pub fn top(g: &Globals, name: &str) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let c = running(&root, name)?;
    let mut pids = match &c.cgroup {
        Some(cg) => cg.pids(),
        // A rootless container without a delegated cgroup: its process tree.
        None => process_tree(c.pid),
    };
    if pids.is_empty() {
        pids.push(c.pid);
    }
    pids.sort();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    println!("{:<8}{:<10}{:<10}{:<12}CMD", "UID", "PID", "PPID", "TIME");
    for pid in pids {
        if let Some((pid, ppid, uid, ticks, cmd)) = proc_info(pid) {
            let s = ticks / hz;
            println!(
                "{:<8}{:<10}{:<10}{:<12}{}",
                uid,
                pid,
                ppid,
                format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60),
                cmd
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", units[i])
}

/// `rbuild stats`: CPU %, memory and pids from each container's cgroup.
pub fn stats(g: &Globals, no_stream: bool, names: &[String]) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let pick = || -> anyhow::Result<Vec<ContainerState>> {
        if names.is_empty() {
            Ok(state::list(&root)?
                .into_iter()
                .filter(|c| c.is_running())
                .collect())
        } else {
            names.iter().map(|n| running(&root, n)).collect()
        }
    };
    let interval = Duration::from_millis(if no_stream { 200 } else { 1000 });
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let mut warned: Vec<String> = Vec::new();
    loop {
        let list = pick()?;
        let before: Vec<u64> = list
            .iter()
            .map(|c| c.cgroup.as_ref().map(|cg| cg.stats().cpu_ns).unwrap_or(0))
            .collect();
        std::thread::sleep(interval);
        if !no_stream {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:<14}{:<20}{:<10}{:<24}{:<10}PIDS",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %"
        );
        for (c, b) in list.iter().zip(before) {
            let Some(cgroup) = &c.cgroup else {
                // Rootless without a delegated cgroup: nothing measures it (docker shows "--").
                println!(
                    "{:<14}{:<20}{:<10}{:<24}{:<10}--",
                    c.short_id(),
                    c.name,
                    "--",
                    "-- / --",
                    "--"
                );
                if !warned.contains(&c.id) {
                    eprintln!(
                        "note: container {} has no cgroup (started without root and without a \
                         cgroup delegated to the user), so its usage cannot be measured",
                        c.name
                    );
                    warned.push(c.id.clone());
                }
                continue;
            };
            let s = cgroup.stats();
            let cpu = s.cpu_ns.saturating_sub(b) as f64 / interval.as_nanos() as f64 * 100.0;
            let limit = s.memory_limit.unwrap_or(mem_total).min(if mem_total > 0 {
                mem_total
            } else {
                u64::MAX
            });
            let mem_pct = if limit > 0 {
                s.memory_bytes as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            println!(
                "{:<14}{:<20}{:<10}{:<24}{:<10}{}",
                c.short_id(),
                c.name,
                format!("{cpu:.2}%"),
                format!("{} / {}", human(s.memory_bytes), human(limit)),
                format!("{mem_pct:.2}%"),
                s.pids
            );
        }
        std::io::stdout().flush()?;
        if no_stream {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &str, lines: u64) -> String {
        let mut c = std::io::Cursor::new(text.as_bytes().to_vec());
        let start = tail_start(&mut c, text.len() as u64, lines).unwrap() as usize;
        text[start..].to_string()
    }

    #[test]
    fn tail_counts_lines_like_docker() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        // A last line without its newline is a line.
        assert_eq!(tail("a\nb\nc", 1), "c");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        // Empty lines count.
        assert_eq!(tail("a\n\n\n", 2), "\n\n");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("\n", 1), "\n");
        // Across the 64 KiB blocks read from the end.
        let long: String = (0..30_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&long, 2), "line 29998\nline 29999\n");
        let want: String = (20_000..30_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&long, 10_000), want);
        let big_last = format!("x\n{}", "y".repeat(200_000));
        assert_eq!(tail(&big_last, 1).len(), 200_000);
        assert_eq!(tail(&big_last, 2), big_last);
    }

    #[test]
    fn tail_values() {
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("5").unwrap(), Some(5));
        assert_eq!(parse_tail("-1").unwrap(), None);
        assert!(parse_tail("five").is_err());
    }
}
