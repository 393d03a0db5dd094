//! Which optional APIs the cluster serves (CloudNativePG, Gateway API),
//! discovered at run time and refreshed now and then, so installing a CRD
//! later is noticed without a restart.

use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::Mutex;

/// Optional APIs served by the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Served {
    /// `postgresql.cnpg.io/v1` clusters.
    pub cloud_native_pg: bool,
    /// `gateway.networking.k8s.io/v1` httproutes.
    pub gateway_api: bool,
}

impl Served {
    /// Every child kind the cluster serves.
    pub fn child_kinds(self) -> Vec<crate::render::child::ChildKind> {
        use crate::render::child::ChildKind;
        ChildKind::ALL
            .into_iter()
            .filter(|k| match k {
                ChildKind::PostgresCluster => self.cloud_native_pg,
                ChildKind::HttpRoute => self.gateway_api,
                _ => true,
            })
            .collect()
    }
}

const REFRESH: Duration = Duration::from_secs(60);

pub struct Capabilities {
    client: Client,
    cached: Mutex<Option<(Instant, Served)>>,
}

impl Capabilities {
    pub fn new(client: Client) -> Self {
        Self { client, cached: Mutex::new(None) }
    }

    pub async fn get(&self) -> Result<Served, kube::Error> {
        let mut cached = self.cached.lock().await;
        if let Some((at, served)) = *cached
            && at.elapsed() < REFRESH
        {
            return Ok(served);
        }
        let served = Served {
            cloud_native_pg: self.serves("postgresql.cnpg.io/v1", "clusters").await?,
            gateway_api: self.serves("gateway.networking.k8s.io/v1", "httproutes").await?,
        };
        *cached = Some((Instant::now(), served));
        Ok(served)
    }

    async fn serves(&self, group_version: &str, plural: &str) -> Result<bool, kube::Error> {
        match self.client.list_api_group_resources(group_version).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
