//! Read-only views for operators: counts and a paged list of accounts. Each is a scan; they
//! serve the admin API and `/metrics`, never a message path.

use super::{keys, DeviceRecord, Store, StoreError};
use crate::ids::{AccountId, DeviceNo};

/// How much the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub accounts: u64,
    pub devices: u64,
    pub groups: u64,
    /// Entries waiting in every device queue.
    pub queued: u64,
}

/// One account with its devices, for listings.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub account: AccountId,
    pub devices: Vec<(DeviceNo, DeviceRecord)>,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Store {
    /// Counts accounts, devices, groups and queued entries (scans; for operators).
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut accounts = 0;
        let mut devices = 0;
        let mut last: Option<Vec<u8>> = None;
        for k in self.t.accountdevice_record.iter().keys() {
            let k = k?;
            devices += 1;
            let account = account_part(&k);
            if last.as_deref() != Some(account) {
                accounts += 1;
                last = Some(account.to_vec());
            }
        }
        Ok(StoreCounts {
            accounts,
            devices,
            groups: count(self.t.group_record.len()),
            queued: self.queue_depth(),
        })
    }

    /// Entries waiting in every device queue.
    pub fn queue_depth(&self) -> u64 {
        count(self.t.deviceseq_queuerecord.len()).saturating_add(count(self.log.pending_count()))
    }

    /// Up to `limit` accounts in phone-number order, starting after `after` (exclusive).
    pub fn accounts_page(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        let start = match after {
            // `account ‖ 0x01` sorts after every `account ‖ 0x00 ‖ …` key of that account.
            Some(a) => {
                let mut k = a.as_str().as_bytes().to_vec();
                k.push(keys::SEP + 1);
                k
            }
            None => Vec::new(),
        };
        let mut out: Vec<AccountSummary> = Vec::new();
        for kv in self.t.accountdevice_record.range(start..) {
            let (k, v) = kv?;
            let d = keys::parse_device(&k)
                .ok_or_else(|| super::corrupt("accountdevice_record", "bad key"))?;
            let rec: DeviceRecord = super::decode("accountdevice_record", &v)?;
            let full = out.len() >= limit;
            match out.last_mut() {
                Some(last) if last.account == d.account => last.devices.push((d.device, rec)),
                _ if full => break,
                _ => out.push(AccountSummary {
                    account: d.account,
                    devices: vec![(d.device, rec)],
                }),
            }
        }
        Ok(out)
    }
}

fn account_part(k: &[u8]) -> &[u8] {
    let end = k.iter().position(|&b| b == keys::SEP).unwrap_or(k.len());
    &k[..end]
}
