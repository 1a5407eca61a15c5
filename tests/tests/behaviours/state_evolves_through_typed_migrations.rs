//! An actor's state can change shape: each version is a type of its own, a record says which
//! version wrote it, and an older record is read through `From` conversions, version by
//! version (v1 → v2 adds a field; v2 → v3 renames one, removes one and widens one), over a
//! store reopened by each version of the code. A record is written back in the new version
//! with the actor's next write; one written by a newer version is refused, never
//! overwritten. Golden bytes pin each version's record; a property test checks that any
//! version's record reads back as the chain of conversions says.

#![allow(unreachable_pub, missing_docs)]

use std::path::Path;

use gears::prelude::*;
use proptest::prelude::*;

/// Version 1: what the first release stored.
#[derive(Actor, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[actor(name = "profile")]
pub struct ProfileV1 {
    pub name: String,
    pub visits: u32,
    pub legacy_flag: bool,
}

#[handlers]
impl ProfileV1 {
    pub async fn visit(&mut self, name: String) {
        self.name = name;
        self.visits += 1;
    }
}

/// Version 2: an email is added.
#[derive(Actor, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[actor(name = "profile", version = 2, previous = ProfileV1)]
pub struct ProfileV2 {
    pub name: String,
    pub visits: u32,
    pub legacy_flag: bool,
    pub email: Option<String>,
}

impl From<ProfileV1> for ProfileV2 {
    fn from(v1: ProfileV1) -> Self {
        ProfileV2 {
            name: v1.name,
            visits: v1.visits,
            legacy_flag: v1.legacy_flag,
            email: None,
        }
    }
}

#[handlers]
impl ProfileV2 {
    pub async fn visit(&mut self, name: String) {
        self.name = name;
        self.visits += 1;
    }

    pub async fn set_email(&mut self, email: String) {
        self.email = Some(email);
    }

    pub async fn get(&self) -> ProfileV2 {
        self.clone()
    }
}

/// Version 3: `name` is now `display_name`, `legacy_flag` is gone, `visits` is a `u64`.
#[derive(Actor, Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[actor(name = "profile", version = 3, previous = ProfileV2)]
pub struct Profile {
    pub display_name: String,
    pub visits: u64,
    pub email: Option<String>,
}

impl From<ProfileV2> for Profile {
    fn from(v2: ProfileV2) -> Self {
        Profile {
            display_name: v2.name,
            visits: u64::from(v2.visits),
            email: v2.email,
        }
    }
}

#[handlers]
impl Profile {
    pub async fn visit(&mut self, name: String) {
        self.display_name = name;
        self.visits += 1;
    }

    pub async fn get(&self) -> Profile {
        self.clone()
    }
}

async fn open<A: gears::Handlers>(dir: &Path) -> Runtime {
    Runtime::builder()
        .path(dir)
        .register::<A>()
        .open()
        .await
        .unwrap()
}

/// The version byte of `key`'s stored record (format byte, then the version varint).
fn stored_version(dir: &Path, key: &str) -> u8 {
    let db = fjall::Database::builder(dir).open().unwrap();
    let state = db
        .keyspace("state", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let record = state
        .get(gears::__private::state_key("profile", key))
        .unwrap()
        .unwrap();
    record[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_reads_the_older_ones_and_writes_its_own() {
    let dir = tempfile::tempdir().unwrap();
    // Version 1 writes two profiles.
    let rt = open::<ProfileV1>(dir.path()).await;
    rt.get::<ProfileV1>("a").visit("Ann".into()).await.unwrap();
    rt.get::<ProfileV1>("b").visit("Bob".into()).await.unwrap();
    rt.get::<ProfileV1>("b").visit("Bob".into()).await.unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(stored_version(dir.path(), "a"), 1);

    // Version 2 reads both; a write stores `b` as version 2, `a` stays version 1 on disk.
    let rt = open::<ProfileV2>(dir.path()).await;
    let a = rt.get::<ProfileV2>("a").get().await.unwrap();
    assert_eq!(
        a,
        ProfileV2 {
            name: "Ann".into(),
            visits: 1,
            legacy_flag: false,
            email: None
        }
    );
    rt.get::<ProfileV2>("b")
        .set_email("bob@example.com".into())
        .await
        .unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(stored_version(dir.path(), "a"), 1, "a read writes nothing");
    assert_eq!(stored_version(dir.path(), "b"), 2);

    // Version 3 reads a version-1 record (two steps) and a version-2 record (one).
    let rt = open::<Profile>(dir.path()).await;
    let a = rt.get::<Profile>("a").get().await.unwrap();
    assert_eq!(
        a,
        Profile {
            display_name: "Ann".into(),
            visits: 1,
            email: None
        }
    );
    let b = rt.get::<Profile>("b").get().await.unwrap();
    assert_eq!(
        b,
        Profile {
            display_name: "Bob".into(),
            visits: 2,
            email: Some("bob@example.com".into())
        }
    );
    rt.get::<Profile>("a").visit("Anna".into()).await.unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(stored_version(dir.path(), "a"), 3);

    // Version 2 again (a rollback of the code): the version-3 record is refused, with a
    // clear error, and not overwritten by a write; the version-2 record still reads.
    let rt = open::<ProfileV2>(dir.path()).await;
    for attempt in [
        rt.get::<ProfileV2>("a").get().await.map(|_| ()),
        rt.get::<ProfileV2>("a").visit("x".into()).await,
    ] {
        match attempt {
            Err(CallError::Decode(e)) => {
                let message = e.to_string();
                assert!(
                    message.contains("version 3") && message.contains("newer"),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(rt.get::<ProfileV2>("b").get().await.unwrap().visits, 2);
    rt.shutdown().await.unwrap();
    assert_eq!(stored_version(dir.path(), "a"), 3);
    let rt = open::<Profile>(dir.path()).await;
    let a = rt.get::<Profile>("a").get().await.unwrap();
    assert_eq!((a.display_name.as_str(), a.visits), ("Anna", 2));
    rt.shutdown().await.unwrap();
}

/// Records of each version, as their code wrote them, in `tests/fixtures`:
/// `GEARS_WRITE_FIXTURES=1` writes a missing one; after that they must never change.
#[test]
fn golden_records_of_every_version_read_as_the_current_one() {
    let v1 = ProfileV1 {
        name: "Ann".into(),
        visits: 7,
        legacy_flag: true,
    };
    let v2 = ProfileV2 {
        email: Some("ann@example.com".into()),
        ..ProfileV2::from(v1.clone())
    };
    let v3 = Profile {
        visits: u64::from(u32::MAX) + 1,
        ..Profile::from(v2.clone())
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let cases = [
        ("state_profile_v1.bin", gears::__private::encode_state(&v1)),
        ("state_profile_v2.bin", gears::__private::encode_state(&v2)),
        ("state_profile_v3.bin", gears::__private::encode_state(&v3)),
    ];
    for (name, bytes) in &cases {
        let path = dir.join(name);
        if std::env::var_os("GEARS_WRITE_FIXTURES").is_some() && !path.exists() {
            std::fs::write(&path, bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            &golden, bytes,
            "{name} changed: stored data would be misread"
        );
    }
    let read = |i: usize| {
        let golden = std::fs::read(dir.join(cases[i].0)).unwrap();
        gears::__private::decode_state::<Profile>(&golden).unwrap()
    };
    assert_eq!(read(0), Profile::from(ProfileV2::from(v1)));
    assert_eq!(read(1), Profile::from(v2));
    assert_eq!(read(2), v3);
    // A version older than the chain knows is refused by name.
    let mut unknown = gears::__private::encode_state(&ProfileV1::default());
    unknown[1] = 0;
    let error = gears::__private::decode_state::<Profile>(&unknown).unwrap_err();
    assert!(error.contains("no state version 0"), "{error}");
}

fn any_v1() -> impl Strategy<Value = ProfileV1> {
    (".{0,12}", any::<u32>(), any::<bool>()).prop_map(|(name, visits, legacy_flag)| ProfileV1 {
        name,
        visits,
        legacy_flag,
    })
}

fn any_v2() -> impl Strategy<Value = ProfileV2> {
    (any_v1(), proptest::option::of(".{0,12}")).prop_map(|(v1, email)| ProfileV2 {
        email,
        ..ProfileV2::from(v1)
    })
}

proptest! {
    /// Whatever version wrote a record, the current code reads what the conversions make of
    /// it, and a record it writes reads back as written.
    #[test]
    fn any_chain_of_migrations_reads_back_what_was_written(
        v1 in any_v1(),
        v2 in any_v2(),
        visits in any::<u64>(),
    ) {
        let read = |bytes: Vec<u8>| gears::__private::decode_state::<Profile>(&bytes).unwrap();
        prop_assert_eq!(
            read(gears::__private::encode_state(&v1)),
            Profile::from(ProfileV2::from(v1.clone()))
        );
        prop_assert_eq!(read(gears::__private::encode_state(&v2)), Profile::from(v2.clone()));
        let v3 = Profile { visits, ..Profile::from(v2) };
        prop_assert_eq!(read(gears::__private::encode_state(&v3)), v3);
    }
}
