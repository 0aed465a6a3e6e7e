//! Registry benchmark: publish and pull latency of a 10 MB adapter on local files (SQLite index) and on
//! SeaweedFS S3 (PostgreSQL index), and listing 10,000 versions of one adapter on PostgreSQL with its query
//! plan. Needs PostgreSQL binaries and `weed` (scripts/install_seaweedfs.sh). Prints one line per measurement.
//!
//! `cargo run -p adapterci-registry --example registry_bench`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapterci_core::ports::{AdapterIndex, AdapterRegistry};
use adapterci_registry::object_store::{self, ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, open_object_store, open_object_store_with_env};
use adapterci_store::SeaStore;
use adapterci_testkit::postgres::PostgresServer;
use adapterci_testkit::registry_conformance::{adapter_name, publish_request};
use adapterci_testkit::seaweedfs::{BUCKET, SeaweedServer};

const ROUNDS: usize = 10;
const ADAPTER_BYTES: usize = 10 * 1000 * 1000;
const LISTED_VERSIONS: usize = 10_000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Publishes then pulls (manifest + every blob, verified) a distinct 10 MB adapter `ROUNDS` times, and as the
/// peer puts and gets the same bytes with plain `object_store` calls on the same store (no digest, manifest,
/// index or publish guard: what a hand-rolled "copy the file to the bucket" would cost).
async fn publish_and_pull(label: &str, registry: &ObjectStoreRegistry, raw: &Arc<dyn ObjectStore>) {
    let (mut publishes, mut pulls) = (Vec::new(), Vec::new());
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let weights: Vec<u8> =
            (0..ADAPTER_BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761 + round as u32) as u8).collect();
        let request = publish_request("bench", &weights);
        let started = Instant::now();
        let record = registry.publish(request).await.unwrap();
        publishes.push(started.elapsed());
        let started = Instant::now();
        let resolved = registry.get(&record.name, record.version).await.unwrap().unwrap();
        for file in &resolved.manifest.files {
            registry.fetch_blob(&file.digest).await.unwrap();
        }
        pulls.push(started.elapsed());

        let location: object_store::path::Path = format!("peer/round-{round}").into();
        let started = Instant::now();
        raw.put(&location, PutPayload::from(weights.clone())).await.unwrap();
        puts.push(started.elapsed());
        let started = Instant::now();
        let read = raw.get(&location).await.unwrap().bytes().await.unwrap();
        gets.push(started.elapsed());
        assert_eq!(read.len(), ADAPTER_BYTES);
    }
    println!(
        "{label}: 10 MB adapter, median of {ROUNDS}: publish {}, pull {} (min publish {}, min pull {})",
        ms(median(publishes.clone())),
        ms(median(pulls.clone())),
        ms(*publishes.iter().min().unwrap()),
        ms(*pulls.iter().min().unwrap())
    );
    let ratio = |ours: &[Duration], peer: &[Duration]| {
        median(ours.to_vec()).as_secs_f64() / median(peer.to_vec()).as_secs_f64()
    };
    println!(
        "{label}: peer (plain object_store put/get of the same 10 MB), median of {ROUNDS}: put {}, get {}; \
         ratio ours/peer: publish/put {:.2}, pull/get {:.2}",
        ms(median(puts.clone())),
        ms(median(gets.clone())),
        ratio(&publishes, &puts),
        ratio(&pulls, &gets)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "machine: {} cores; profile: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) { "dev" } else { "release" }
    );

    // Local files + SQLite.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SeaStore::connect(&format!("sqlite://{}/meta.db?mode=rwc", dir.path().display())).await.unwrap();
    let local = open_object_store(&dir.path().join("blobs").display().to_string()).unwrap();
    publish_and_pull("local files + SQLite", &ObjectStoreRegistry::new(local.clone(), Arc::new(sqlite)), &local).await;

    // SeaweedFS S3 + PostgreSQL.
    let postgres = tokio::task::spawn_blocking(PostgresServer::start).await.unwrap().expect("PostgreSQL");
    let seaweed = tokio::task::spawn_blocking(SeaweedServer::start).await.unwrap().expect("SeaweedFS");
    let env: HashMap<&str, String> = seaweed.env().into_iter().collect();
    let s3 = open_object_store_with_env(&format!("s3://{BUCKET}/bench"), &|key| env.get(key).cloned()).unwrap();
    for _ in 0..100 {
        if s3.put(&"probe".into(), PutPayload::from_static(b"ok")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pg = Arc::new(SeaStore::connect(&postgres.create_database().unwrap()).await.unwrap());
    publish_and_pull("SeaweedFS S3 + PostgreSQL", &ObjectStoreRegistry::new(s3.clone(), pg.clone()), &s3).await;

    // 10,000 versions of one adapter on PostgreSQL.
    let name = adapter_name("many");
    pg.execute_unprepared(&format!(
        "INSERT INTO adapter_versions (name, version, manifest_digest, base_model_digest, run_id, created_at, deprecated) \
         SELECT 'many', n, 'sha256:' || lpad(to_hex(n), 64, '0'), 'sha256:' || repeat('b', 64), NULL, now(), false \
         FROM generate_series(1, {LISTED_VERSIONS}) AS n"
    ))
    .await
    .unwrap();
    // Other adapters' rows, so the plan must pick this adapter's out of more than its own.
    pg.execute_unprepared(
        "INSERT INTO adapter_versions (name, version, manifest_digest, base_model_digest, run_id, created_at, deprecated) \
         SELECT 'other-' || (n % 50), n, 'sha256:' || lpad(to_hex(n + 1000000), 64, '0'), 'sha256:' || repeat('b', 64), \
         NULL, now(), false FROM generate_series(1, 50000) AS n",
    )
    .await
    .unwrap();
    pg.execute_unprepared("ANALYZE adapter_versions").await.unwrap();
    let mut listings = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let versions = pg.list_versions(&name).await.unwrap();
        listings.push(started.elapsed());
        assert_eq!(versions.len(), LISTED_VERSIONS);
    }
    println!(
        "PostgreSQL: list_versions of {LISTED_VERSIONS} versions (60,000 rows in the table), median of {ROUNDS}: {} (min {})",
        ms(median(listings.clone())),
        ms(*listings.iter().min().unwrap())
    );
    let plan = pg
        .query_text(
            "EXPLAIN ANALYZE SELECT name, version, manifest_digest, base_model_digest, run_id, created_at \
             FROM adapter_versions WHERE name = 'many' ORDER BY version ASC",
        )
        .await
        .unwrap();
    println!("plan:");
    for line in plan {
        println!("  {line}");
    }
}
