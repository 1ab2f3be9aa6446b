//! `relaybox backup --out FILE` (online, through the admin API) and
//! `relaybox restore FILE` (offline, into an empty data directory).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::api::Api;
use super::{progress_bar, ApiArgs, Failure};
use crate::config::Config;

/// Runs `relaybox backup`: downloads a backup to `out` (written to `out.partial`, fsync'd,
/// then renamed, so `out` is never a half backup).
pub fn backup(api_args: &ApiArgs, cfg: &Config, out: &Path) -> Result<(), Failure> {
    let api = Api::new(api_args, cfg, true)?;
    if out.as_os_str().is_empty() {
        return Err(Failure::usage("--out must name a file"));
    }
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let res = api.call("POST", "/v1/backup", None)?;
    let status = res.status().as_u16();
    if status != 200 {
        let body = res.into_body().read_to_string().unwrap_or_default();
        return Err(super::api::api_error(status, &body));
    }
    let total = res
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = progress_bar(total, "backup");
    let written = (|| -> std::io::Result<u64> {
        let mut file = std::fs::File::create(&partial)?;
        let mut reader = res.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let got = reader.read(&mut buf)?;
            if got == 0 {
                break;
            }
            file.write_all(&buf[..got])?;
            n += got as u64;
            bar.inc(got as u64);
        }
        file.sync_all()?;
        Ok(n)
    })();
    bar.finish_and_clear();
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(Failure::api(format!("downloading the backup: {e}")));
        }
    };
    if total.is_some_and(|t| t != n) {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::api(format!(
            "the backup download ended early ({n} of {} bytes)",
            total.unwrap_or(0)
        )));
    }
    std::fs::rename(&partial, out)
        .map_err(|e| Failure::api(format!("renaming to {}: {e}", out.display())))?;
    println!("Backup written to {} ({n} bytes).", out.display());
    Ok(())
}

/// Runs `relaybox restore`: unpacks `file` into the (empty) data directory.
pub fn restore(file: &Path, data_dir: Option<&Path>, cfg: &Config) -> Result<(), Failure> {
    let data_dir = data_dir.unwrap_or(&cfg.relay.data_dir);
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::usage(format!("cannot open {}: {e}", file.display())))?;
    let total = f.metadata().ok().map(|m| m.len());
    let bar = progress_bar(total, "restore");
    let manifest = crate::backup::restore(std::io::BufReader::new(bar.wrap_read(f)), data_dir);
    bar.finish_and_clear();
    let action = format!("restore {}", file.display());
    match manifest {
        Ok(m) => {
            if let Err(e) =
                crate::audit::record_offline(data_dir, (&cfg.audit).into(), &action, "ok")
            {
                eprintln!("warning: writing the audit log failed: {e}");
            }
            println!(
                "Restored the backup of {} ({} store entries, {} files) into {}.",
                m.created_at,
                m.store_entries,
                m.files.len(),
                data_dir.display()
            );
            Ok(())
        }
        Err(e) => Err(Failure::api(format!("restore refused: {e}"))),
    }
}
