//! `--chown` owners resolved from the image's /etc/passwd and /etc/group, read as data.

use super::fswrite::RootWriter;
use std::io::Read;

/// Reads an in-image file through the root-confined resolver (None when missing).
fn read_in_image(root: &RootWriter, path: &str) -> Option<String> {
    let mut f = root.open_read(path).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    Some(s)
}

fn lookup(db: Option<&str>, name: &str) -> Option<(u32, u32)> {
    db?.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// Resolves `user[:group]` (names or numeric ids) to (uid, gid). A group left out uses the
/// same numeric value as the uid, as Docker documents for `--chown`.
pub fn resolve_owner(root: Option<&RootWriter>, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = root.and_then(|r| read_in_image(r, "/etc/passwd"));
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup(passwd.as_deref(), user)
            .map(|(u, _)| u)
            .ok_or_else(|| format!("unknown user {user:?} in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = root.and_then(|r| read_in_image(r, "/etc/group"));
                lookup(groups.as_deref(), g)
                    .map(|(gid, _)| gid)
                    .or_else(|| {
                        // The group field of /etc/group is "name:x:gid:members".
                        groups.as_deref()?.lines().find_map(|l| {
                            let f: Vec<&str> = l.split(':').collect();
                            (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                        })
                    })
                    .ok_or_else(|| format!("unknown group {g:?} in the image's /etc/group"))?
            }
        },
    };
    for (what, id) in [("user", uid), ("group", gid)] {
        if id > i32::MAX as u32 {
            // 4294967295 is -1 to chown(2): "leave unchanged", so the file would stay root's.
            return Err(format!(
                "{what} id {id} in --chown={spec} is out of range: ids must be below 2147483648"
            ));
        }
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let w = RootWriter::open(dir.path()).unwrap();
        assert_eq!(resolve_owner(Some(&w), "app").unwrap(), (1000, 1000));
        assert_eq!(resolve_owner(Some(&w), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_owner(Some(&w), "7:8").unwrap(), (7, 8));
        assert!(resolve_owner(Some(&w), "nobody").is_err());
        assert_eq!(resolve_owner(None, "5").unwrap(), (5, 5));
        assert!(resolve_owner(None, "4294967295")
            .unwrap_err()
            .contains("out of range"));
        assert!(resolve_owner(None, "0:2147483648")
            .unwrap_err()
            .contains("group id"));
    }
}
