//! Caps in-band registrations per client address: with registration open,
//! one address must not be able to create accounts without end (spam
//! accounts, filling the database). A registration reserves its slot before
//! the account is created and gives it back if creation fails, so
//! registrations sent at the same moment cannot all pass the check.

use crate::quota::WindowQuota;
use std::net::IpAddr;

/// Accounts one address may create per window (`[registration]
/// max_per_address` per `per_address_window_secs`; 0 = no limit).
pub type RegistrationLimit = WindowQuota<IpAddr>;
