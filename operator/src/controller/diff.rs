//! Decides whether a live object already holds everything we would apply, so
//! that an unchanged world costs reads only and no writes.
//!
//! The desired object must be a *subset* of the live one: other managers and
//! the API server's defaulting may add fields, which we ignore. Quantities
//! compare by value ("1000m" == "1"), because the API server canonicalises
//! them.

use serde_json::Value;

/// True when every field of `desired` is present with the same value in `live`.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        (Value::String(d), Value::String(l)) => d == l || quantities_equal(d, l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

/// The API server drops empty maps, lists and nulls on some fields.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The parts of an object that an apply sets: labels, annotations, owner
/// references and everything outside metadata and status.
pub fn applied_fields(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(map) = object {
        for (k, v) in map {
            match k.as_str() {
                "status" | "apiVersion" | "kind" => {}
                "metadata" => {
                    let mut meta = serde_json::Map::new();
                    for key in ["labels", "annotations", "ownerReferences"] {
                        if let Some(v) = v.get(key) {
                            meta.insert(key.into(), v.clone());
                        }
                    }
                    out.insert(k.clone(), Value::Object(meta));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Parses a Kubernetes quantity ("500m", "1Gi", "2e3") into a number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * factor)
}

fn quantities_equal(a: &str, b: &str) -> bool {
    // Only strings that start like numbers can be quantities; "http" is not.
    let numeric = |s: &str| s.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if !numeric(a) || !numeric(b) {
        return false;
    }
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn fields_added_by_the_server_are_ignored() {
        let desired = json!({"spec": {"replicas": 1}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_value_is_a_difference() {
        assert!(!is_subset(&json!({"spec": {"replicas": 2}}), &json!({"spec": {"replicas": 1}})));
    }

    #[test]
    fn a_removed_field_is_a_difference() {
        assert!(!is_subset(&json!({"spec": {"image": "a"}}), &json!({"spec": {}})));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"cpu": "1000m"}), &json!({"cpu": "1"})));
        assert!(is_subset(&json!({"memory": "1Gi"}), &json!({"memory": "1073741824"})));
        assert!(!is_subset(&json!({"memory": "1Gi"}), &json!({"memory": "1G"})));
    }

    #[test]
    fn names_are_not_quantities() {
        assert!(!is_subset(&json!({"port": "http"}), &json!({"port": "https"})));
    }

    #[test]
    fn empty_maps_match_missing_fields() {
        assert!(is_subset(&json!({"podSelector": {}, "emptyDir": {}}), &json!({})));
    }

    #[test]
    fn list_length_matters() {
        assert!(!is_subset(&json!({"ports": [1]}), &json!({"ports": [1, 2]})));
    }

    #[test]
    fn applied_fields_leave_out_status_and_server_metadata() {
        let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "resourceVersion": "3", "labels": {"x": "y"}}, "spec": {}, "status": {"a": 1}});
        assert_eq!(applied_fields(&obj), json!({"metadata": {"labels": {"x": "y"}}, "spec": {}}));
    }

    proptest! {
        #[test]
        fn every_object_is_a_subset_of_itself(v in arb_json()) {
            prop_assert!(is_subset(&v, &v));
        }

        #[test]
        fn binary_quantities_equal_their_byte_count(n in 0u32..4096, unit in 0usize..4) {
            let suffix = ["Ki", "Mi", "Gi", "Ti"][unit];
            let bytes = (n as f64) * 1024f64.powi(unit as i32 + 1);
            prop_assert_eq!(parse_quantity(&format!("{n}{suffix}")), Some(bytes));
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z0-9]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
