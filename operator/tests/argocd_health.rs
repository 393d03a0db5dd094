//! The Argo CD health checks in examples/argocd/resource_customizations run
//! in a real Lua 5.4 interpreter against their testdata, as Argo CD's own
//! tests run its built-in checks.

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaSerdeExt};

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    health_status: Expected,
    input_path: String,
}

#[derive(serde::Deserialize)]
struct Expected {
    status: String,
    message: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    tests: Vec<Case>,
}

fn kind_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/argocd/resource_customizations/carerecord.dev").join(kind)
}

fn check(kind: &str) {
    let dir = kind_dir(kind);
    let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    let cases: Cases = serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap()).unwrap();
    assert!(!cases.tests.is_empty());
    for case in cases.tests {
        let object: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(&case.input_path)).unwrap()).unwrap();
        let lua = Lua::new();
        lua.globals().set("obj", lua.to_value(&object).unwrap()).unwrap();
        let result: mlua::Table =
            lua.load(&script).eval().unwrap_or_else(|e| panic!("{kind} {}: {e}", case.input_path));
        let status: String = result.get("status").unwrap();
        let message: String = result.get("message").unwrap_or_default();
        assert_eq!(
            (status.as_str(), message.as_str()),
            (case.health_status.status.as_str(), case.health_status.message.as_str()),
            "{kind} {}",
            case.input_path
        );
    }
}

#[test]
fn tenant_health() {
    check("CareRecordTenant");
}

#[test]
fn connector_health() {
    check("ProviderConnector");
}

#[test]
fn agreement_health() {
    check("SharingAgreement");
}

#[test]
fn argocd_cm_carries_the_tested_scripts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/argocd/argocd-cm.yaml");
    let cm: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for kind in ["CareRecordTenant", "ProviderConnector", "SharingAgreement"] {
        let key = format!("resource.customizations.health.carerecord.dev_{kind}");
        let shipped = cm["data"][key.as_str()].as_str().unwrap_or_default();
        let tested = std::fs::read_to_string(kind_dir(kind).join("health.lua")).unwrap();
        assert_eq!(shipped.trim_end(), tested.trim_end(), "{key} differs from {kind}/health.lua");
    }
}
