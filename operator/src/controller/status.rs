//! Status writes, shared by every controller: only when the status changed,
//! as a server-side apply of the status subresource under the one field
//! manager.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::MANAGER;

/// Writes `new` as the object's status unless `unchanged` says it equals the
/// current one. Returns whether a write happened.
pub async fn write_if_changed<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    new: &S,
    unchanged: impl Fn(&S, &S) -> bool,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    if current.is_some_and(|c| unchanged(c, new)) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}
