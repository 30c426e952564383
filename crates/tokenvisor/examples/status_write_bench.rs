//! The status-file write, variant by variant: the per-file cost of replacing many small files
//! in one directory on this disk (docs/BENCHMARKS.md, "Round 6: the status-file write").
//!
//! ```text
//! status_write_bench prepare DIR FILES           # DIR/<variant>/: FILES files each, synced
//! status_write_bench run DIR ROUNDS [VARIANT…]   # per round: syncfs, then one pass per variant
//! ```
//!
//! `prepare` creates one sub-directory per variant holding `FILES` status-sized files
//! (`w<i>.json`, ≈ 600 bytes), with a kept lock file and a spare where the variant uses them,
//! and syncs the file system, so that every block is allocated on disk (a block freed later
//! pays the synchronous discard of a file system mounted with `discard`). Run it well before
//! the measurement (outside the measurement lock): by then the files are older than the
//! kernel's 30 s dirty expiry, as a routine status file is when it is replaced.
//!
//! `run` replaces every file of each variant once per round, after a `syncfs` (so each
//! round replaces written-back files again), and prints files/s per variant and round. The
//! variants (the sequence under ToolHive's lock `<name>.lock`):
//! - `full`: today's write before round 6: create/open the lock file, `flock`, check the
//!   inode, temp file, write, chmod, rename over `<name>.json`, unlink the lock file, close.
//! - `keeplock`: as `full`, but the lock file is kept (open the existing one + `flock`).
//! - `swap`: lock file created and removed as in `full`; the new content is written in
//!   place into the spare `.<name>.json.spare` (from offset 0, then `set_len`), which is
//!   then exchanged with `<name>.json` (`renameat2(RENAME_EXCHANGE)`): no block is freed.
//! - `swap-keeplock`: `swap` with the lock file kept.
//! - `inplace`: reference floor, not atomic: the lock kept, `<name>.json` overwritten in
//!   place.
//!
//! Every path is relative to a directory descriptor (as the `*at` calls of the real code).
//! One thread, no fsync (status files are views of the journal).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
// tokio's clock (the workspace bans `std::time::Instant::now`); no runtime needed.
use tokio::time::Instant;

use rustix::fs::{FlockOperation, RenameFlags, flock, renameat_with};

type Error = Box<dyn std::error::Error>;

const VARIANTS: [&str; 5] = ["full", "keeplock", "swap", "swap-keeplock", "inplace"];

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 3 => prepare(Path::new(&args[1]), args[2].parse()?),
        Some("run") if args.len() >= 3 => {
            let variants: Vec<&str> = if args.len() > 3 {
                args[3..].iter().map(String::as_str).collect()
            } else {
                VARIANTS.to_vec()
            };
            run(Path::new(&args[1]), args[2].parse()?, &variants)
        }
        _ => Err("usage: status_write_bench prepare DIR FILES | run DIR ROUNDS [VARIANT…]".into()),
    }
}

/// A record of the size of a real status file, its digits varied per write.
fn record(i: usize, round: usize) -> Vec<u8> {
    format!(
        "{{\n  \"status\": \"running\",\n  \"created_at\": \"2026-12-05T23:00:00.{i:09}Z\",\n  \
         \"updated_at\": \"2026-12-05T23:{:02}:00.{i:09}Z\",\n  \"process_id\": 4242,\n  \
         \"token\": {{\n    \"state\": \"healthy\",\n    \"expires_at\": \"2026-12-06T00:{:02}:00Z\",\n    \
         \"refresh_at\": \"2026-12-05T23:59:00Z\",\n    \"attempts\": 0,\n    \"generation\": 3,\n    \
         \"endpoint\": \"https://idp.example.com/oauth2/token\",\n    \"client_id\": \"workload-{i}\",\n    \
         \"schema\": 1,\n    \"padding\": \"{}\"\n  }}\n}}\n",
        round % 60,
        round % 60,
        "x".repeat(200)
    )
    .into_bytes()
}

fn prepare(dir: &Path, files: usize) -> Result<(), Error> {
    for variant in VARIANTS {
        let sub = dir.join(variant);
        fs::create_dir_all(&sub)?;
        fs::set_permissions(&sub, Permissions::from_mode(0o700))?;
        let keep_lock = matches!(variant, "keeplock" | "swap-keeplock" | "inplace");
        let spare = matches!(variant, "swap" | "swap-keeplock");
        for i in 0..files {
            let content = record(i, 0);
            create(&sub.join(format!("w{i}.json")), &content)?;
            if keep_lock {
                create(&sub.join(format!("w{i}.lock")), b"")?;
            }
            if spare {
                create(&sub.join(format!(".w{i}.json.spare")), &content)?;
            }
        }
    }
    rustix::fs::syncfs(File::open(dir)?)?;
    println!("prepared {files} files per variant in {}", dir.display());
    Ok(())
}

fn create(path: &Path, content: &[u8]) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    Ok(())
}

fn run(dir: &Path, rounds: usize, variants: &[&str]) -> Result<(), Error> {
    for round in 1..=rounds {
        rustix::fs::syncfs(File::open(dir)?)?;
        for &variant in variants {
            let sub = dir.join(variant);
            let d = File::open(&sub)?;
            let files = fs::read_dir(&sub)?
                .filter(|e| {
                    e.as_ref().is_ok_and(|e| {
                        let n = e.file_name();
                        let n = n.as_encoded_bytes();
                        n.ends_with(b".json") && !n.starts_with(b".")
                    })
                })
                .count();
            let started = Instant::now();
            for i in 0..files {
                let content = record(i, round);
                let name = format!("w{i}");
                match variant {
                    "full" => full(&d, &sub, &name, &content, false)?,
                    "keeplock" => full(&d, &sub, &name, &content, true)?,
                    "swap" => swap(&d, &sub, &name, &content, false)?,
                    "swap-keeplock" => swap(&d, &sub, &name, &content, true)?,
                    "inplace" => inplace(&d, &name, &content)?,
                    other => return Err(format!("unknown variant {other}").into()),
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "round {round} {variant:>14}: {files} files in {secs:.2} s = {:.0} files/s ({:.1} µs/file)",
                files as f64 / secs,
                secs * 1e6 / files as f64
            );
        }
    }
    Ok(())
}

/// Opens (creating when `create`) and locks `<name>.lock`, checking that the path still
/// names the locked inode (as `locks::FileLock::try_lock`).
/// Releases the lock taken by [`lock`], removing the lock file first unless it is `keep`t
/// (ToolHive's way: removed while still locked).
fn unlock(d: &File, name: &str, lock: File, keep: bool) -> Result<(), Error> {
    if !keep {
        rustix::fs::unlinkat(
            d,
            format!("{name}.lock").as_str(),
            rustix::fs::AtFlags::empty(),
        )?;
    }
    drop(lock);
    Ok(())
}

fn lock(d: &File, name: &str, create: bool) -> Result<File, Error> {
    let path = format!("{name}.lock");
    loop {
        let f = match rustix::fs::openat(
            d,
            path.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(e) if e == rustix::io::Errno::NOENT && create => {
                match rustix::fs::openat(
                    d,
                    path.as_str(),
                    rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::CREATE
                        | rustix::fs::OFlags::EXCL
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o600),
                ) {
                    Ok(_) => {}
                    Err(e) if e == rustix::io::Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        flock(&f, FlockOperation::NonBlockingLockExclusive)?;
        let ours = f.metadata()?;
        let now = rustix::fs::statat(d, path.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        if now.st_ino == ours.ino() && now.st_dev == ours.dev() {
            return Ok(f);
        }
    }
}

fn full(d: &File, sub: &Path, name: &str, content: &[u8], keep: bool) -> Result<(), Error> {
    let lock = lock(d, name, !keep)?;
    let target: PathBuf = sub.join(format!("{name}.json"));
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.json."))
        .rand_bytes(6)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(sub)?;
    temp.write_all(content)?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o600))?;
    temp.persist(&target)?;
    unlock(d, name, lock, keep)
}

fn swap(d: &File, _sub: &Path, name: &str, content: &[u8], keep: bool) -> Result<(), Error> {
    let lock = lock(d, name, !keep)?;
    let spare = format!(".{name}.json.spare");
    let target = format!("{name}.json");
    let f = File::from(rustix::fs::openat(
        d,
        spare.as_str(),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?);
    // The real code checks the spare's mode and age from this fstat.
    let _meta = f.metadata()?;
    f.write_all_at(content, 0)?;
    f.set_len(content.len() as u64)?;
    drop(f);
    renameat_with(d, spare.as_str(), d, target.as_str(), RenameFlags::EXCHANGE)?;
    unlock(d, name, lock, keep)
}

fn inplace(d: &File, name: &str, content: &[u8]) -> Result<(), Error> {
    let lock = lock(d, name, false)?;
    let f = File::from(rustix::fs::openat(
        d,
        format!("{name}.json").as_str(),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?);
    f.write_all_at(content, 0)?;
    f.set_len(content.len() as u64)?;
    drop(f);
    drop(lock);
    Ok(())
}
