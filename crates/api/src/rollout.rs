//! How a deployment's rollout policy splits its sites into waves: canary
//! sites first, then waves of a fixed size or growing by a factor. Without
//! a policy, every site is in one wave. Pure: `outpost plan` shows it, and
//! the rollout engine follows it.

use serde::{Deserialize, Serialize};

use crate::manifest::Rollout;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// `canary`, `all`, or the wave's number from 1.
    pub name: String,
    pub sites: Vec<String>,
}

/// Splits `sites` (in the order given) into the waves of `rollout`.
pub fn waves(rollout: Option<&Rollout>, sites: &[String]) -> Vec<Wave> {
    let Some(rollout) = rollout else {
        return whole(sites);
    };
    let mut rest = sites;
    let mut out = Vec::new();
    if let Some(canary) = rollout.canary {
        let n = (canary as usize).min(rest.len());
        let (first, after) = rest.split_at(n);
        if !first.is_empty() {
            out.push(Wave {
                name: "canary".to_string(),
                sites: first.to_vec(),
            });
        }
        rest = after;
    }
    let waves = rollout.waves.as_ref();
    let mut size = match waves.and_then(|w| w.size) {
        Some(size) => size as usize,
        None => waves.and_then(|w| w.start).unwrap_or(1) as usize,
    };
    let factor = waves.and_then(|w| w.exponential).map(|f| f as usize);
    if waves.is_none() {
        // A canary alone: everything else in one wave after it.
        size = rest.len().max(1);
    }
    let mut number = 1;
    while !rest.is_empty() {
        let n = size.max(1).min(rest.len());
        let (wave, after) = rest.split_at(n);
        out.push(Wave {
            name: number.to_string(),
            sites: wave.to_vec(),
        });
        rest = after;
        number += 1;
        if let Some(factor) = factor {
            size = size.saturating_mul(factor);
        }
    }
    if out.is_empty() { whole(sites) } else { out }
}

fn whole(sites: &[String]) -> Vec<Wave> {
    vec![Wave {
        name: "all".to_string(),
        sites: sites.to_vec(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("s{i}")).collect()
    }

    fn shape(rollout: Option<serde_json::Value>, n: usize) -> Vec<(String, usize)> {
        let rollout: Option<Rollout> = rollout.map(|r| serde_json::from_value(r).unwrap());
        waves(rollout.as_ref(), &sites(n))
            .into_iter()
            .map(|w| (w.name, w.sites.len()))
            .collect()
    }

    fn names(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn splits_sites_into_waves() {
        assert_eq!(shape(None, 5), names(&[("all", 5)]));
        assert_eq!(
            shape(Some(serde_json::json!({ "waves": { "size": 2 } })), 5),
            names(&[("1", 2), ("2", 2), ("3", 1)])
        );
        assert_eq!(
            shape(
                Some(serde_json::json!({ "canary": 2, "waves": { "size": 10 } })),
                25
            ),
            names(&[("canary", 2), ("1", 10), ("2", 10), ("3", 3)])
        );
        assert_eq!(
            shape(
                Some(serde_json::json!({ "waves": { "exponential": 2, "start": 1 } })),
                10
            ),
            names(&[("1", 1), ("2", 2), ("3", 4), ("4", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "canary": 1 })), 4),
            names(&[("canary", 1), ("1", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "canary": 5 })), 2),
            names(&[("canary", 2)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "healthyFor": "2m" })), 3),
            names(&[("1", 3)])
        );
        assert_eq!(
            shape(Some(serde_json::json!({ "waves": { "size": 3 } })), 0),
            names(&[("all", 0)])
        );
    }
}
