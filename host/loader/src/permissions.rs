//! The permission rule: a library, or the directory it sits in, that someone
//! other than its owner may write is refused — whoever can write it can make
//! the host run their code. Group write is accepted only when the group is
//! the owner's private group (named like the owner, the owner's primary
//! group, no other member): the default of Debian and Ubuntu's umask 002.

use std::path::Path;

use zu_runtime::LoadError;

/// A group as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    /// The group's name.
    pub name: String,
    /// Its listed members.
    pub members: Vec<String>,
    /// Other users whose primary group it is.
    pub primary_of: Vec<String>,
}

/// The owner as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFacts {
    /// The owner's user name.
    pub name: String,
    /// The owner's primary group id.
    pub primary_gid: u32,
}

/// Why group write is or is not safe for a file of group `gid`: `Ok` for the
/// owner's private group, else the rule that refuses it.
pub fn private_group_rule(owner: Option<&OwnerFacts>, gid: u32, group: Option<&GroupFacts>) -> Result<(), String> {
    let (Some(owner), Some(group)) = (owner, group) else {
        return Err(format!("writable by group {gid}, whose members cannot be looked up"));
    };
    if owner.primary_gid != gid || owner.name != group.name {
        return Err(format!(
            "writable by group {:?}, which is not the owner's private group",
            group.name
        ));
    }
    let others: Vec<&String> = group
        .members
        .iter()
        .chain(&group.primary_of)
        .filter(|m| **m != owner.name)
        .collect();
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "writable by group {:?}, which has other members ({})",
            group.name,
            names.join(", ")
        ));
    }
    Ok(())
}

/// Refuses a path (file or directory) that users other than its owner may
/// write; accepts group write for the owner's private group.
#[cfg(unix)]
pub fn check(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // a missing file is reported by the loader instead
    };
    let mode = meta.mode() & 0o7777;
    let refuse = |rule: String| LoadError::InsecurePermissions {
        path: path.to_owned(),
        mode,
        rule,
    };
    if mode & 0o002 != 0 {
        return Err(refuse("writable by everyone".into()));
    }
    if mode & 0o020 != 0 {
        let owner = users::owner(meta.uid());
        let group = users::group(meta.gid());
        private_group_rule(owner.as_ref(), meta.gid(), group.as_ref()).map_err(refuse)?;
        tracing::debug!(path = %path.display(), "group-writable, but the group is the owner's private group");
    }
    Ok(())
}

/// Permission bits are not checked on this platform.
#[cfg(not(unix))]
pub fn check(_path: &Path) -> Result<(), LoadError> {
    Ok(())
}

/// The user and group database, through libc (NSS, so LDAP users count too).
#[cfg(unix)]
mod users {
    use std::ffi::CStr;
    use std::sync::Mutex;

    use super::{GroupFacts, OwnerFacts};

    /// getpwent walks one process-wide cursor.
    static PASSWD: Mutex<()> = Mutex::new(());

    fn text(p: *const libc::c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: libc hands out NUL-terminated strings that live while the
        // entry does; we copy before the next call.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    pub(super) fn owner(uid: u32) -> Option<OwnerFacts> {
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: all-zero is a valid `passwd` to be filled in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: the buffers outlive the call; `out` points into `pwd` on success.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return None;
        }
        Some(OwnerFacts {
            name: text(pwd.pw_name),
            primary_gid: pwd.pw_gid,
        })
    }

    pub(super) fn group(gid: u32) -> Option<GroupFacts> {
        let mut buf = vec![0 as libc::c_char; 64 * 1024];
        // SAFETY: all-zero is a valid `group` to be filled in.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: as in `owner`.
        let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return None;
        }
        let mut members = Vec::new();
        let mut p = grp.gr_mem;
        // SAFETY: gr_mem is a NULL-terminated array of C strings.
        unsafe {
            while !p.is_null() && !(*p).is_null() {
                members.push(text(*p));
                p = p.add(1);
            }
        }
        let mut primary_of = Vec::new();
        let _guard = PASSWD.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the cursor is used by one thread at a time (the lock).
        unsafe {
            libc::setpwent();
            loop {
                let e = libc::getpwent();
                if e.is_null() {
                    break;
                }
                if (*e).pw_gid == gid {
                    primary_of.push(text((*e).pw_name));
                }
            }
            libc::endpwent();
        }
        Some(GroupFacts {
            name: text(grp.gr_name),
            members,
            primary_of,
        })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn owner() -> OwnerFacts {
        OwnerFacts {
            name: "ana".into(),
            primary_gid: 1000,
        }
    }

    fn group(name: &str, members: &[&str], primary_of: &[&str]) -> GroupFacts {
        GroupFacts {
            name: name.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            primary_of: primary_of.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn group_write_is_accepted_only_for_the_owners_private_group() {
        let o = owner();
        assert_eq!(
            private_group_rule(Some(&o), 1000, Some(&group("ana", &[], &["ana"]))),
            Ok(())
        );
        let other_member = private_group_rule(Some(&o), 1000, Some(&group("ana", &["bob"], &["ana"])));
        assert!(other_member.unwrap_err().contains("other members (bob)"));
        let shared_primary = private_group_rule(Some(&o), 1000, Some(&group("ana", &[], &["ana", "eve"])));
        assert!(shared_primary.unwrap_err().contains("(eve)"));
        let staff = private_group_rule(Some(&o), 50, Some(&group("staff", &[], &[])));
        assert!(staff.unwrap_err().contains("not the owner's private group"));
        let renamed = private_group_rule(Some(&o), 1000, Some(&group("users", &[], &["ana"])));
        assert!(renamed.unwrap_err().contains("not the owner's private group"));
        assert!(private_group_rule(None, 1000, None).is_err());
    }

    #[test]
    fn world_writable_is_refused_and_owner_only_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.so");
        std::fs::write(&f, b"").unwrap();
        for (mode, ok) in [(0o644, true), (0o755, true), (0o646, false), (0o777, false)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check(&f).is_ok(), ok, "mode {mode:o}");
        }
        let err = check(&f).unwrap_err();
        assert!(err.to_string().contains("writable by everyone"), "{err}");
    }
}
