//! `user[:group]` resolution from the image's /etc/passwd and /etc/group, parsed as data (never
//! through NSS), with docker's rules.

use crate::error::{Result, RunnerError};

/// One /etc/passwd line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// One /etc/group line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Numeric group id.
    pub gid: u32,
    /// Supplementary members (user names).
    pub members: Vec<String>,
}

/// The ids a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (including `gid`).
    pub groups: Vec<u32>,
    /// Home directory ("/" when the user has no passwd entry).
    pub home: String,
}

/// Parses /etc/passwd content; malformed lines are skipped.
pub fn parse_passwd(content: &str) -> Vec<PasswdEntry> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// Parses /etc/group content; malformed lines are skipped.
pub fn parse_group(content: &str) -> Vec<GroupEntry> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// The largest user or group id accepted (docker's limit: 2^31 - 1).
pub const MAX_ID: u32 = i32::MAX as u32;

/// Resolves `spec` (`""`, `user`, `uid`, `user:group`, `uid:gid`, ...) like docker: a name must
/// exist in passwd/group, a number need not.
pub fn resolve(spec: &str, passwd: &[PasswdEntry], groups: &[GroupEntry]) -> Result<ResolvedUser> {
    let err = |reason: String| RunnerError::User {
        spec: spec.to_string(),
        reason,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: "/".into(),
            })),
        Err(_) => passwd.iter().find(|p| p.name == user_part).cloned(),
    }
    .ok_or_else(|| {
        err(format!(
            "unable to find user {user_part}: no matching entries in the image's /etc/passwd"
        ))
    })?;
    let gid = match group_part {
        None | Some("") => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| {
                        err(format!(
                        "unable to find group {g}: no matching entries in the image's /etc/group"
                    ))
                    })?
                    .gid
            }
        },
    };
    let mut supplementary = vec![gid];
    if group_part.is_none() && !entry.name.is_empty() {
        for g in groups {
            if g.members.contains(&entry.name) && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    // setresuid(-1) means "unchanged": an id that large would leave the process root.
    if entry.uid > MAX_ID {
        return Err(err(format!(
            "user id {} is out of range: ids must be below 2^31 ({})",
            entry.uid,
            MAX_ID as u64 + 1
        )));
    }
    if let Some(g) = supplementary.iter().find(|g| **g > MAX_ID) {
        return Err(err(format!(
            "group id {g} is out of range: ids must be below 2^31 ({})",
            MAX_ID as u64 + 1
        )));
    }
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        groups: supplementary,
        home: if entry.home.is_empty() {
            "/".into()
        } else {
            entry.home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        # comment\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:\n";

    fn r(spec: &str) -> Result<ResolvedUser> {
        resolve(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        let app = r("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(app.groups, vec![1000, 10]);
        assert_eq!(r("1000").unwrap().groups, vec![1000, 10]);
        let unknown = r("4242").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        assert_eq!(r("app:staff").unwrap().groups, vec![50]);
        assert_eq!(r("4242:77").unwrap().gid, 77);
        assert_eq!(r("daemon:").unwrap().gid, 1);
    }

    #[test]
    fn ids_of_2_pow_31_and_above_are_refused() {
        for spec in ["4294967295", "2147483648", "0:4294967295", "app:2147483648"] {
            let e = r(spec).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{spec}: {e}");
        }
        let huge = "big:x:4294967295:0::/:/bin/sh\n";
        let e = resolve("big", &parse_passwd(huge), &parse_group(GROUP))
            .unwrap_err()
            .to_string();
        assert!(e.contains("user id 4294967295 is out of range"), "{e}");
        let group = "huge:x:4294967295:app\n";
        let e = resolve("app", &parse_passwd(PASSWD), &parse_group(group))
            .unwrap_err()
            .to_string();
        assert!(e.contains("group id 4294967295 is out of range"), "{e}");
        assert_eq!(r("2147483647:2147483647").unwrap().uid, 2_147_483_647);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("unable to find group nogroup"));
    }
}
