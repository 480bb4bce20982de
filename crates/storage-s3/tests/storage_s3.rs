//! What only the S3 backend does: prefixes inside a shared bucket, encryption and storage class
//! on every object, multipart uploads that never leave parts behind, and error classification
//! under real network faults (a fault-injecting proxy in front of moto).

mod storage_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{ServerSideEncryption as SdkEncryption, StorageClass};
use bytes::Bytes;
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_core::storage::{ObjectKey, PutMode, Storage, StorageError, Timeouts};
use pgec2_storage_s3::{MultipartSettings, ObjectEncryption, S3Settings, S3Storage, ServerSideEncryption};
use pgec2_testkit::{FaultProxy, MotoServer, ProxyMode};
use storage_support::{fresh_bucket, moto, raw_client};

const PART: u64 = 5 * 1024 * 1024;

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn settings(server: &MotoServer, bucket: &str, prefix: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint()),
        multipart: MultipartSettings { threshold: PART, part_size: PART, concurrency: 2 },
        timeouts: Timeouts { operation: Duration::from_secs(2), min_bytes_per_second: 1024 * 1024 },
        ..S3Settings::new(bucket, prefix)
    }
}

async fn store(server: &MotoServer, settings: S3Settings) -> S3Storage {
    S3Storage::from_sdk_config(&server.sdk_config().await, settings).expect("s3 store")
}

async fn bucket(server: &MotoServer, purpose: &str) -> String {
    let bucket = fresh_bucket(purpose);
    server.create_bucket(&bucket).await.expect("create bucket");
    bucket
}

#[tokio::test]
async fn a_store_sees_only_the_objects_under_its_prefix() {
    let server = moto();
    let bucket = bucket(&server, "prefixes").await;
    let cluster_a = store(&server, settings(&server, &bucket, "prod/cluster-a")).await;
    let cluster_b = store(&server, settings(&server, &bucket, "prod/cluster-a2")).await;
    let whole_bucket = store(&server, settings(&server, &bucket, "")).await;
    cluster_a.put(&key("wal/1"), Bytes::from_static(b"a"), PutMode::CreateNew).await.expect("put a");
    cluster_b.put(&key("wal/1"), Bytes::from_static(b"b"), PutMode::CreateNew).await.expect("put b");

    let listed: Vec<String> =
        cluster_a.list("").await.expect("list").into_iter().map(|meta| meta.key.to_string()).collect();
    assert_eq!(listed, ["wal/1"]);
    assert_eq!(cluster_a.get(&key("wal/1")).await.expect("get"), Bytes::from_static(b"a"));
    let everything = whole_bucket.list("prod/").await.expect("list bucket");
    let keys: Vec<&str> = everything.iter().map(|meta| meta.key.as_str()).collect();
    assert_eq!(keys, ["prod/cluster-a/wal/1", "prod/cluster-a2/wal/1"]);
    assert_eq!(cluster_a.describe(), format!("s3://{bucket}/prod/cluster-a"));
}

#[tokio::test]
async fn encryption_and_storage_class_apply_to_small_and_multipart_objects() {
    let server = moto();
    let bucket = bucket(&server, "encryption").await;
    let settings = S3Settings {
        encryption: Some(ObjectEncryption { sse: ServerSideEncryption::Aes256, kms_key_id: None }),
        storage_class: Some("STANDARD_IA".to_string()),
        ..settings(&server, &bucket, "archive")
    };
    let storage = store(&server, settings).await;
    storage.put(&key("small"), Bytes::from_static(b"small"), PutMode::CreateNew).await.expect("small put");
    storage
        .put(&key("large"), Bytes::from(vec![7_u8; PART as usize + 1]), PutMode::CreateNew)
        .await
        .expect("large put");

    let client = raw_client(&server).await;
    for name in ["archive/small", "archive/large"] {
        let head = client.head_object().bucket(&bucket).key(name).send().await.expect("head");
        assert_eq!(head.server_side_encryption(), Some(&SdkEncryption::Aes256), "{name}");
        assert_eq!(head.storage_class(), Some(&StorageClass::StandardIa), "{name}");
    }
}

#[tokio::test]
async fn a_kms_key_id_is_sent_with_every_write() {
    let server = moto();
    let bucket = bucket(&server, "kms").await;
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    let settings = S3Settings {
        encryption: Some(ObjectEncryption { sse: ServerSideEncryption::AwsKms, kms_key_id: Some(key_id.to_string()) }),
        ..settings(&server, &bucket, "")
    };
    let storage = store(&server, settings).await;
    storage.put(&key("wal/1"), Bytes::from_static(b"wal"), PutMode::CreateNew).await.expect("put");
    let head = raw_client(&server).await.head_object().bucket(&bucket).key("wal/1").send().await.expect("head");
    assert_eq!(head.server_side_encryption(), Some(&SdkEncryption::AwsKms));
    assert_eq!(head.ssekms_key_id(), Some(key_id));
}

/// Waits until the bucket has no unfinished multipart upload (aborts run in the background).
async fn assert_no_uploads_remain(client: &aws_sdk_s3::Client, bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let uploads = client.list_multipart_uploads().bucket(bucket).send().await.expect("list uploads");
        if uploads.uploads().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "unfinished multipart uploads remain: {:?}", uploads.uploads());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_large_create_over_an_existing_object_is_refused_without_uploading() {
    let server = moto();
    let bucket = bucket(&server, "multipart-exists").await;
    let storage = store(&server, settings(&server, &bucket, "")).await;
    let object = key("backups/b1/parts/000001");
    let first = Bytes::from(vec![1_u8; 2 * PART as usize + 1]);
    storage.put(&object, first.clone(), PutMode::CreateNew).await.expect("first create");
    let error = storage.put(&object, Bytes::from(vec![2_u8; 2 * PART as usize + 1]), PutMode::CreateNew).await;
    assert!(matches!(&error, Err(error) if error.is_already_exists()), "got {error:?}");
    assert!(storage.get(&object).await.expect("get") == first, "the first object is kept");
    assert_no_uploads_remain(&raw_client(&server).await, &bucket).await;
}

/// The object appears while a large create is uploading its parts: the conditional
/// CompleteMultipartUpload is refused, the upload is aborted, and the other object stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_created_during_a_large_create_wins_and_no_parts_are_left_behind() {
    let server = moto();
    let bucket = bucket(&server, "multipart-race").await;
    let settings = S3Settings {
        multipart: MultipartSettings { threshold: PART, part_size: PART, concurrency: 1 },
        ..settings(&server, &bucket, "")
    };
    let storage = Arc::new(store(&server, settings).await);
    let client = raw_client(&server).await;
    let object = key("backups/b1/parts/000001");
    let large = Bytes::from(vec![1_u8; 3 * PART as usize + 1]);
    let uploading = {
        let (storage, object, large) = (storage.clone(), object.clone(), large.clone());
        tokio::spawn(async move { storage.put(&object, large, PutMode::CreateNew).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.list_multipart_uploads().bucket(&bucket).send().await.expect("list uploads").uploads().is_empty() {
        assert!(Instant::now() < deadline, "the large create never started its upload");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let small = Bytes::from_static(b"written by someone else");
    let other = storage.put(&object, small.clone(), PutMode::CreateNew).await;
    let large_outcome = uploading.await.expect("task");
    // Exactly one create wins; normally the small one, which lands while the parts upload.
    match (&other, &large_outcome) {
        (Ok(()), Err(error)) => {
            assert!(error.is_already_exists(), "the large create must see AlreadyExists: {error:?}");
            assert_eq!(storage.get(&object).await.expect("get"), small);
        }
        (Err(error), Ok(())) => {
            assert!(error.is_already_exists(), "the small create must see AlreadyExists: {error:?}");
            assert!(storage.get(&object).await.expect("get") == large);
        }
        outcomes => panic!("exactly one create must win, got {outcomes:?}"),
    }
    assert_no_uploads_remain(&client, &bucket).await;
}

#[tokio::test]
async fn a_missing_bucket_is_a_permanent_error() {
    let server = moto();
    let storage = store(&server, settings(&server, "no-such-bucket", "")).await;
    let error =
        storage.put(&key("wal/1"), Bytes::from_static(b"wal"), PutMode::CreateNew).await.expect_err("no bucket");
    assert!(matches!(error, StorageError::Permanent { .. }), "got {error:?}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_any_request() {
    let server = moto();
    for (what, settings) in [
        ("bucket name", settings(&server, "Not_A_Bucket", "")),
        ("glacier", S3Settings { storage_class: Some("GLACIER".into()), ..settings(&server, "bucket", "") }),
        ("unknown class", S3Settings { storage_class: Some("CHEAP".into()), ..settings(&server, "bucket", "") }),
        ("page size", S3Settings { list_page_size: 0, ..settings(&server, "bucket", "") }),
        (
            "tiny parts",
            S3Settings {
                multipart: MultipartSettings { part_size: 1024, ..MultipartSettings::default() },
                ..settings(&server, "bucket", "")
            },
        ),
    ] {
        let error = S3Storage::from_sdk_config(&server.sdk_config().await, settings).expect_err(what);
        assert!(matches!(error, StorageError::InvalidUrl { .. }), "{what}: {error:?}");
    }
}

/// A store reaching moto through a fault-injecting proxy, with short deadlines.
async fn behind_proxy(purpose: &str) -> (Arc<MotoServer>, FaultProxy, S3Storage) {
    let server = moto();
    let bucket = bucket(&server, purpose).await;
    let proxy = FaultProxy::in_front_of(&server).await.expect("proxy");
    let settings = S3Settings {
        endpoint: Some(proxy.endpoint()),
        timeouts: Timeouts { operation: Duration::from_millis(500), min_bytes_per_second: 1024 * 1024 },
        ..settings(&server, &bucket, "archive")
    };
    let storage = store(&server, settings).await;
    (server, proxy, storage)
}

#[tokio::test]
async fn network_faults_are_transient_errors() {
    let (_server, proxy, storage) = behind_proxy("faults").await;
    let object = key("wal/000000010000000000000001");
    storage.put(&object, Bytes::from_static(b"segment"), PutMode::CreateNew).await.expect("put through the proxy");

    for mode in [ProxyMode::Reset, ProxyMode::Stall, ProxyMode::CloseMidResponse { after_bytes: 20 }] {
        proxy.set(mode);
        let started = Instant::now();
        let error = storage.get(&object).await.expect_err("a faulty network fails the call");
        assert!(!error.is_permanent(), "{mode:?} must be retryable, got {error:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode:?} took {:?}", started.elapsed());
    }
    proxy.set(ProxyMode::PassThrough);
    assert_eq!(storage.get(&object).await.expect("healed"), Bytes::from_static(b"segment"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_carry_a_put_through_a_network_outage() {
    let (_server, proxy, storage) = behind_proxy("outage").await;
    let policy = RetryPolicy {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let storage = Arc::new(Retrying::new(storage, Timeouts::default(), policy));
    proxy.set(ProxyMode::Reset);
    let refused_before = proxy.control().accepted();
    let object = key("wal/000000010000000000000002");
    let pushing = {
        let (storage, object) = (storage.clone(), object.clone());
        tokio::spawn(async move { storage.put(&object, Bytes::from_static(b"segment"), PutMode::CreateNew).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.control().accepted() < refused_before + 3 {
        assert!(Instant::now() < deadline, "the put was not retried through the outage");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set(ProxyMode::PassThrough);
    pushing.await.expect("task").expect("the put succeeds once the network is back");
    assert_eq!(storage.get(&object).await.expect("get"), Bytes::from_static(b"segment"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_on_a_slow_link_is_not_cut_while_it_moves() {
    let server = moto();
    let bucket = bucket(&server, "slow-link").await;
    let proxy = FaultProxy::in_front_of(&server).await.expect("proxy");
    // A one-second stall limit, and a link that needs about four seconds for the object: a
    // fixed request deadline of the stall limit plus the size at 1 MiB/s would cut it.
    let timeouts = Timeouts { operation: Duration::from_secs(1), min_bytes_per_second: 256 * 1024 };
    let settings = S3Settings { endpoint: Some(proxy.endpoint()), timeouts, ..settings(&server, &bucket, "archive") };
    let policy = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    let storage = Retrying::new(store(&server, settings).await, timeouts, policy);
    proxy.set(ProxyMode::Throttle { bytes_per_second: 768 * 1024 });
    let object = key("backups/b1/parts/000001");
    let content = Bytes::from(vec![5_u8; 3 * 1024 * 1024]);

    let started = Instant::now();
    storage.put(&object, content.clone(), PutMode::CreateNew).await.expect("a slow link that moves is not cut");

    assert!(started.elapsed() > Duration::from_secs(3), "the link was slow: {:?}", started.elapsed());
    proxy.set(ProxyMode::PassThrough);
    assert!(storage.get(&object).await.expect("get") == content);
}

#[tokio::test]
async fn an_answer_that_never_comes_is_cut_by_the_stall_limit_not_a_request_deadline() {
    let (_server, proxy, storage) = behind_proxy("hung-answer").await;
    let timeouts = Timeouts { operation: Duration::from_millis(500), min_bytes_per_second: 1024 * 1024 };
    let policy = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    let storage = Retrying::new(storage, timeouts, policy);
    proxy.set(ProxyMode::Stall);
    let started = Instant::now();
    let error = storage.put(&key("wal/000000010000000000000009"), Bytes::from_static(b"wal"), PutMode::CreateNew).await;
    let error = error.expect_err("never answered");
    assert!(matches!(error, StorageError::Stalled { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut after the stall limit: {:?}", started.elapsed());
}
