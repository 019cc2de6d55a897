//! CPU clocks, one per cpufreq policy (a cluster of cores sharing a clock: on RK3588 policy0
//! for the A55s, policy4 and policy6 for the two pairs of A76s).

use super::Root;

/// `(policy number, Hz)` from each policy's `scaling_cur_freq` (in kHz).
pub fn clocks(root: &Root) -> Vec<(u32, u64)> {
    let mut clocks: Vec<(u32, u64)> = root
        .list("/sys/devices/system/cpu/cpufreq")
        .into_iter()
        .filter_map(|name| {
            let policy: u32 = name.strip_prefix("policy")?.parse().ok()?;
            let file = format!("/sys/devices/system/cpu/cpufreq/{name}/scaling_cur_freq");
            let khz: u64 = root.read(file).ok()?.trim().parse().ok()?;
            Some((policy, khz.checked_mul(1000)?))
        })
        .collect();
    // `list` sorts names as text: policy10 would come before policy4.
    clocks.sort_unstable();
    clocks
}
