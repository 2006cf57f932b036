//! The Resource Pool Manager: capacity units per zone, each of a class
//! with a cost per unit-hour, shared by primary (live) and shadow.
//!
//! [`Pool::place`] places the live units wanted and a shadow sized as a
//! fraction of them. Each role is spread over at least two healthy zones
//! (seed 003 §V) in proportion to each zone's predicted demand; an
//! unhealthy zone gets nothing new. Within a zone the cheapest class with
//! free units is used. Placement starts from the current one, so units that
//! still fit stay where they are (no disruption), and units leave an
//! unhealthy zone only once their replacements are placed elsewhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use shadow_api::provision::Role;
use shadow_api::provision::{Pool as PoolView, PoolRow};

/// Units of one class in one zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitClass {
    pub class: String,
    pub units: u32,
    pub cost_per_unit_hour: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Relative predicted demand served from this zone (1 each by default).
    #[serde(default = "one")]
    pub demand_weight: f64,
    pub classes: Vec<UnitClass>,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// `(zone, class, role)` → units.
pub type Placement = BTreeMap<(String, String, Role), u32>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub zones: Vec<Zone>,
    /// The shadow's size as a fraction of live (seed 004: not 1:1).
    #[serde(default = "half")]
    pub shadow_fraction: f64,
    /// Spread each role over at least this many zones when it has as many units.
    #[serde(default = "two")]
    pub min_zones: usize,
}

fn half() -> f64 {
    0.5
}

fn two() -> usize {
    2
}

/// A placement and what it could not place.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub placement: Placement,
    pub shortfall: Option<String>,
}

impl Pool {
    /// The first setting that makes no sense, as `(key, reason)`.
    pub fn invalid(&self) -> Option<(String, String)> {
        if self.zones.is_empty() {
            return Some(("pool.zones".into(), "no zones".into()));
        }
        if !(0.0..=1.0).contains(&self.shadow_fraction) {
            let got = self.shadow_fraction;
            return Some((
                "pool.shadow_fraction".into(),
                format!("must be within 0..=1, got {got}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            let key = format!("pool.zones[{i}]");
            if !seen.insert(&z.name) {
                return Some((
                    format!("{key}.name"),
                    format!("zone {:?} is listed twice", z.name),
                ));
            }
            if z.classes.iter().map(|c| c.units).sum::<u32>() == 0 {
                return Some((
                    format!("{key}.classes"),
                    format!("zone {:?} has no units", z.name),
                ));
            }
            if !z.demand_weight.is_finite() || z.demand_weight < 0.0 {
                return Some((
                    format!("{key}.demand_weight"),
                    "must be zero or more".into(),
                ));
            }
            for (j, c) in z.classes.iter().enumerate() {
                if !c.cost_per_unit_hour.is_finite() || c.cost_per_unit_hour < 0.0 {
                    return Some((
                        format!("{key}.classes[{j}].cost_per_unit_hour"),
                        format!("cost must be zero or more, got {}", c.cost_per_unit_hour),
                    ));
                }
            }
        }
        None
    }

    /// The shadow units for `primary` live units.
    pub fn shadow_for(&self, primary: u32) -> u32 {
        (primary as f64 * self.shadow_fraction - 1e-9)
            .ceil()
            .max(0.0) as u32
    }

    /// Places `primary` live units and their shadow, starting from `current`.
    pub fn place(&self, primary: u32, current: &Placement) -> Placed {
        let wants = [
            (Role::Primary, primary),
            (Role::Shadow, self.shadow_for(primary)),
        ];
        let mut placement = Placement::new();
        // Per role, per zone: what is still to place there.
        let mut quotas: Vec<(Role, Vec<(usize, u32)>)> =
            wants.iter().map(|&(r, n)| (r, self.quotas(n))).collect();
        // Units already placed that fit their zone's quota stay, for both
        // roles before anything new is placed: no disruption.
        for (role, q) in &mut quotas {
            for (zi, left) in q.iter_mut() {
                let zone = &self.zones[*zi];
                for c in &zone.classes {
                    let key = (zone.name.clone(), c.class.clone(), *role);
                    let have = current.get(&key).copied().unwrap_or(0);
                    let n = have.min(*left).min(self.free(zone, c, &placement));
                    *placement.entry(key).or_default() += n;
                    *left -= n;
                }
            }
        }
        let mut short = Vec::new();
        for (role, q) in quotas {
            let missing = self.fill(role, &q, current, &mut placement);
            if missing > 0 {
                short.push(format!(
                    "{missing} {} unit(s) found no free healthy unit",
                    role_name(role)
                ));
            }
        }
        placement.retain(|_, n| *n > 0);
        Placed {
            placement,
            shortfall: (!short.is_empty()).then(|| short.join("; ")),
        }
    }

    fn free(&self, zone: &Zone, class: &UnitClass, placement: &Placement) -> u32 {
        let used: u32 = [Role::Primary, Role::Shadow]
            .iter()
            .map(|&r| {
                placement
                    .get(&(zone.name.clone(), class.class.clone(), r))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        class.units.saturating_sub(used)
    }

    /// Per healthy zone, how many of `want` it should hold: in proportion to
    /// demand (largest remainder), at least one in each of `min_zones` zones.
    fn quotas(&self, want: u32) -> Vec<(usize, u32)> {
        let healthy: Vec<usize> = (0..self.zones.len())
            .filter(|&i| self.zones[i].healthy)
            .collect();
        if healthy.is_empty() || want == 0 {
            return Vec::new();
        }
        let total: f64 = healthy.iter().map(|&i| self.zones[i].demand_weight).sum();
        let weight = |i: usize| {
            if total > 0.0 {
                self.zones[i].demand_weight / total
            } else {
                1.0 / healthy.len() as f64
            }
        };
        let mut q: Vec<(usize, u32, f64)> = healthy
            .iter()
            .map(|&i| {
                let exact = want as f64 * weight(i);
                (i, exact.floor() as u32, exact - exact.floor())
            })
            .collect();
        let left = want - q.iter().map(|x| x.1).sum::<u32>();
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&a, &b| q[b].2.total_cmp(&q[a].2).then(a.cmp(&b)));
        for &k in order.iter().cycle().take(left as usize) {
            q[k].1 += 1;
        }
        // Spread: the zones with the most weight get at least one each.
        let spread = self.min_zones.min(q.len()).min(want as usize);
        let mut by_weight: Vec<usize> = (0..q.len()).collect();
        by_weight.sort_by(|&a, &b| weight(q[b].0).total_cmp(&weight(q[a].0)).then(a.cmp(&b)));
        for &k in by_weight.iter().take(spread) {
            if q[k].1 == 0 {
                let donor = (0..q.len()).max_by_key(|&d| q[d].1).unwrap_or(k);
                q[donor].1 -= 1;
                q[k].1 += 1;
            }
        }
        q.into_iter().map(|(i, n, _)| (i, n)).collect()
    }

    /// Fills each zone's remaining quota with its cheapest free units; what
    /// a full zone cannot hold goes to the cheapest free unit of any healthy
    /// zone; what is still left keeps its units in an unhealthy zone, which
    /// are not moved until replaced. Returns what found no unit.
    fn fill(
        &self,
        role: Role,
        quotas: &[(usize, u32)],
        current: &Placement,
        out: &mut Placement,
    ) -> u32 {
        let mut unplaced = 0;
        for &(zi, quota) in quotas {
            let zone = &self.zones[zi];
            let mut left = quota;
            let mut classes: Vec<&UnitClass> = zone.classes.iter().collect();
            classes.sort_by(|a, b| a.cost_per_unit_hour.total_cmp(&b.cost_per_unit_hour));
            for c in classes {
                let n = left.min(self.free(zone, c, out));
                *out.entry((zone.name.clone(), c.class.clone(), role))
                    .or_default() += n;
                left -= n;
            }
            unplaced += left;
        }
        while unplaced > 0 {
            let best = self
                .zones
                .iter()
                .filter(|z| z.healthy)
                .flat_map(|z| z.classes.iter().map(move |c| (z, c)))
                .filter(|(z, c)| self.free(z, c, out) > 0)
                .min_by(|a, b| a.1.cost_per_unit_hour.total_cmp(&b.1.cost_per_unit_hour));
            let Some((z, c)) = best else { break };
            *out.entry((z.name.clone(), c.class.clone(), role))
                .or_default() += 1;
            unplaced -= 1;
        }
        for ((zone, class, r), &have) in current {
            if *r != role || unplaced == 0 {
                continue;
            }
            if self.zones.iter().any(|z| &z.name == zone && !z.healthy) {
                let n = have.min(unplaced);
                *out.entry((zone.clone(), class.clone(), role)).or_default() += n;
                unplaced -= n;
            }
        }
        unplaced
    }

    pub fn cost_per_hour(&self, placement: &Placement) -> f64 {
        placement
            .iter()
            .map(|((zone, class, _), &n)| {
                let cost = self
                    .zones
                    .iter()
                    .filter(|z| &z.name == zone)
                    .flat_map(|z| &z.classes)
                    .find(|c| &c.class == class)
                    .map_or(0.0, |c| c.cost_per_unit_hour);
                cost * n as f64
            })
            .sum()
    }

    /// What `shadowctl pool` and the API show.
    pub fn view(&self, placed: &Placed, primary: u32) -> PoolView {
        let get = |z: &str, c: &str, r| {
            placed
                .placement
                .get(&(z.to_string(), c.to_string(), r))
                .copied()
                .unwrap_or(0)
        };
        let rows = self
            .zones
            .iter()
            .flat_map(|z| {
                z.classes.iter().map(move |c| PoolRow {
                    zone: z.name.clone(),
                    healthy: z.healthy,
                    class: c.class.clone(),
                    cost_per_unit_hour: c.cost_per_unit_hour,
                    total: c.units,
                    primary: get(&z.name, &c.class, Role::Primary),
                    shadow: get(&z.name, &c.class, Role::Shadow),
                })
            })
            .collect();
        PoolView {
            rows,
            cost_per_hour: self.cost_per_hour(&placed.placement),
            primary_wanted: primary,
            shadow_fraction: self.shadow_fraction,
            shortfall: placed.shortfall.clone(),
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Shadow => "shadow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, spot: u32, on_demand: u32) -> Zone {
        Zone {
            name: name.into(),
            healthy: true,
            demand_weight: 1.0,
            classes: vec![
                UnitClass {
                    class: "on-demand".into(),
                    units: on_demand,
                    cost_per_unit_hour: 0.10,
                },
                UnitClass {
                    class: "spot".into(),
                    units: spot,
                    cost_per_unit_hour: 0.03,
                },
            ],
        }
    }

    fn pool() -> Pool {
        Pool {
            zones: vec![zone("a", 2, 4), zone("b", 2, 4), zone("c", 0, 4)],
            shadow_fraction: 0.5,
            min_zones: 2,
        }
    }

    fn role_total(p: &Placement, role: Role) -> u32 {
        p.iter().filter(|(k, _)| k.2 == role).map(|(_, n)| n).sum()
    }

    fn zones_of(p: &Placement, role: Role) -> usize {
        let zones: std::collections::HashSet<_> =
            p.keys().filter(|k| k.2 == role).map(|k| &k.0).collect();
        zones.len()
    }

    #[test]
    fn spreads_each_role_over_two_zones_and_prefers_the_cheapest_class() {
        let p = pool();
        let placed = p.place(4, &Placement::new());
        assert_eq!(placed.shortfall, None);
        assert_eq!(role_total(&placed.placement, Role::Primary), 4);
        assert_eq!(role_total(&placed.placement, Role::Shadow), 2);
        assert!(zones_of(&placed.placement, Role::Primary) >= 2);
        assert!(
            zones_of(&placed.placement, Role::Shadow) >= 2,
            "{:?}",
            placed.placement
        );
        // Primary takes spot first where there is any: a and b hold 2 spot
        // each, and 4 over 3 zones is 2/1/1.
        let spot: u32 = placed
            .placement
            .iter()
            .filter(|(k, _)| k.1 == "spot")
            .map(|(_, n)| n)
            .sum();
        assert!(spot >= 3, "{:?}", placed.placement);
        // A single unit can only be in one zone.
        let one = p.place(1, &Placement::new());
        assert_eq!(zones_of(&one.placement, Role::Primary), 1);
    }

    #[test]
    fn an_unhealthy_zone_gets_nothing_new_and_keeps_units_until_replaced() {
        let mut p = pool();
        let before = p.place(6, &Placement::new()).placement;
        p.zones[0].healthy = false;
        let after = p.place(6, &before);
        assert!(after.shortfall.is_none());
        assert!(
            !after.placement.keys().any(|k| k.0 == "a"),
            "{:?}",
            after.placement
        );
        assert_eq!(role_total(&after.placement, Role::Primary), 6);
        assert!(zones_of(&after.placement, Role::Primary) >= 2);
        // Nowhere else to go: units stay in the unhealthy zone.
        let tiny = Pool {
            zones: vec![zone("a", 0, 4), zone("b", 0, 1)],
            shadow_fraction: 0.0,
            min_zones: 2,
        };
        let before = tiny.place(4, &Placement::new()).placement;
        let mut sick = tiny.clone();
        sick.zones[0].healthy = false;
        let after = sick.place(4, &before);
        assert_eq!(
            role_total(&after.placement, Role::Primary),
            4,
            "{:?}",
            after.placement
        );
    }

    #[test]
    fn units_that_still_fit_stay_where_they_are() {
        let p = pool();
        let first = p.place(4, &Placement::new()).placement;
        let again = p.place(4, &first).placement;
        assert_eq!(first, again);
        // Growing keeps every existing unit.
        let grown = p.place(6, &first).placement;
        for (k, n) in &first {
            assert!(
                grown.get(k).copied().unwrap_or(0) >= *n,
                "{k:?} moved: {grown:?}"
            );
        }
    }

    #[test]
    fn a_full_pool_reports_the_shortfall_and_the_cost() {
        let p = pool();
        let placed = p.place(20, &Placement::new());
        assert!(
            placed.shortfall.as_deref().unwrap().contains("primary"),
            "{placed:?}"
        );
        let view = p.view(&placed, 20);
        assert!((view.cost_per_hour - p.cost_per_hour(&placed.placement)).abs() < 1e-9);
        assert_eq!(
            view.rows.iter().map(|r| r.primary + r.shadow).sum::<u32>(),
            16
        );
    }

    #[test]
    fn bad_pools_are_named() {
        let mut p = pool();
        p.zones[1].classes[0].cost_per_unit_hour = -1.0;
        assert_eq!(
            p.invalid().unwrap().0,
            "pool.zones[1].classes[0].cost_per_unit_hour"
        );
        let mut p = pool();
        p.zones[2].classes.iter_mut().for_each(|c| c.units = 0);
        assert_eq!(p.invalid().unwrap().0, "pool.zones[2].classes");
        let mut p = pool();
        p.shadow_fraction = 2.0;
        assert_eq!(p.invalid().unwrap().0, "pool.shadow_fraction");
    }
}
