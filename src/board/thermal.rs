//! SoC temperatures from the thermal zones (`/sys/class/thermal/thermal_zoneN/type`, `temp` in
//! millidegrees Celsius). RK3588's zones are `soc-thermal`, `bigcore0-thermal`,
//! `bigcore1-thermal`, `littlecore-thermal`, `center-thermal`, `gpu-thermal`, `npu-thermal`;
//! when the SoC passes a trip point its clocks are cut, and token rates with them.

use super::Root;

#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// `N` of `thermal_zoneN`: two zones may share a type.
    pub zone: u32,
    pub kind: String,
    pub celsius: f64,
}

pub fn zones(root: &Root) -> Vec<Zone> {
    let mut zones: Vec<Zone> = root
        .list("/sys/class/thermal")
        .into_iter()
        .filter_map(|name| {
            let zone: u32 = name.strip_prefix("thermal_zone")?.parse().ok()?;
            let dir = format!("/sys/class/thermal/{name}");
            let kind = root.read(format!("{dir}/type")).ok()?.trim().to_owned();
            let milli: i64 = root.read(format!("{dir}/temp")).ok()?.trim().parse().ok()?;
            #[allow(clippy::cast_precision_loss)] // millidegrees: far below 2^52
            let celsius = milli as f64 / 1000.0;
            Some(Zone {
                zone,
                kind,
                celsius,
            })
        })
        .collect();
    zones.sort_unstable_by_key(|z| z.zone);
    zones
}
