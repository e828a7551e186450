//! The sample's customer resources, its repeat offenders, and its broken lines.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_core::{
    Deployment, Geography, KeyRef, LogRecord, Resource, ResourceId, ResourceRegistry,
};

use crate::corpus::Abuse;
use crate::KeyFile;

/// One sample resource.
pub struct SampleResource {
    pub id: &'static str,
    pub short: &'static str,
    pub geography: &'static str,
    pub regions: &'static [&'static str],
    pub deployments: &'static [Deployment],
    /// Relative share of traffic.
    pub weight: u32,
    /// Distinct end users; 0 when the customer sends no end-user IDs.
    pub users: u32,
    pub content_logging: bool,
    pub customer_key: bool,
    pub retention_days: Option<u32>,
}

const US: &[&str] = &["eastus", "eastus2", "westus", "westus3", "southcentralus"];
const EU: &[&str] = &[
    "westeurope",
    "swedencentral",
    "francecentral",
    "germanywestcentral",
];
const APAC: &[&str] = &[
    "japaneast",
    "australiaeast",
    "southeastasia",
    "koreacentral",
];

/// Every region, for Global deployments that process anywhere.
pub const ALL_REGIONS: &[&str] = &[
    "eastus",
    "eastus2",
    "westus",
    "westus3",
    "southcentralus",
    "westeurope",
    "swedencentral",
    "francecentral",
    "germanywestcentral",
    "japaneast",
    "australiaeast",
    "southeastasia",
    "koreacentral",
];

use Deployment::{Datazone, Global, Standard};

const fn res(
    id: &'static str,
    short: &'static str,
    geography: &'static str,
    weight: u32,
    users: u32,
) -> SampleResource {
    let (regions, deployments): (&[&str], &[Deployment]) = match geography.as_bytes() {
        b"us" => (US, &[Standard, Global, Datazone]),
        b"eu" => (EU, &[Standard, Global, Datazone]),
        // No data zone outside the US and the EU.
        _ => (APAC, &[Standard, Global]),
    };
    SampleResource {
        id,
        short,
        geography,
        regions,
        deployments,
        weight,
        users,
        content_logging: true,
        customer_key: false,
        retention_days: None,
    }
}

/// The sample's twenty resources.
pub const RESOURCES: &[SampleResource] = &[
    res("contoso-chat-us", "contoso", "us", 12, 40),
    res("contoso-search-us", "contososearch", "us", 6, 0),
    res("tailspin-support-us", "tailspin", "us", 8, 25),
    res("woodgrove-bank-us", "woodgrove", "us", 5, 15),
    res("adatum-copilot-us", "adatum", "us", 7, 30),
    res("litware-edu-us", "litware", "us", 4, 50),
    res("proseware-games-us", "proseware", "us", 4, 60),
    res("wingtip-retail-us", "wingtip", "us", 3, 20),
    SampleResource {
        customer_key: true,
        ..res("fabrikam-legal-eu", "fabrikam", "eu", 4, 10)
    },
    SampleResource {
        content_logging: false,
        ..res("northwind-health-eu", "northwind", "eu", 5, 20)
    },
    res("contoso-chat-eu", "contosoeu", "eu", 8, 30),
    res("alpine-ski-eu", "alpine", "eu", 2, 10),
    res("margie-travel-eu", "margie", "eu", 3, 25),
    SampleResource {
        retention_days: Some(14),
        ..res("humongous-insurance-eu", "humongous", "eu", 3, 12)
    },
    res("lucerne-news-eu", "lucerne", "eu", 2, 8),
    res("tailspin-support-apac", "tailspinap", "apac", 4, 20),
    res("wideworld-importers-apac", "wideworld", "apac", 3, 10),
    res("relecloud-apac", "relecloud", "apac", 5, 40),
    res("fourth-coffee-apac", "fourthcoffee", "apac", 2, 8),
    res("coho-vineyard-apac", "coho", "apac", 1, 5),
];

/// An end user who sends near-copies of one abusive prompt, again and again.
pub struct Offender {
    pub resource: &'static str,
    pub user: &'static str,
    pub category: Abuse,
    /// Which corpus entry.
    pub pick: usize,
    pub times: usize,
    pub every_secs: i64,
}

/// The sample's repeat offenders.
pub const OFFENDERS: &[Offender] = &[
    Offender {
        resource: "tailspin-support-us",
        user: "tailspin-user-07",
        category: Abuse::HarmfulRequest,
        pick: 3,
        times: 40,
        every_secs: 1800,
    },
    Offender {
        resource: "contoso-chat-eu",
        user: "contosoeu-user-13",
        category: Abuse::Hate,
        pick: 11,
        times: 30,
        every_secs: 2400,
    },
    Offender {
        resource: "relecloud-apac",
        user: "relecloud-user-02",
        category: Abuse::Jailbreak,
        pick: 5,
        times: 25,
        every_secs: 3000,
    },
    Offender {
        resource: "northwind-health-eu",
        user: "northwind-user-05",
        category: Abuse::HarmfulRequest,
        pick: 21,
        times: 20,
        every_secs: 3600,
    },
    Offender {
        resource: "margie-travel-eu",
        user: "margie-user-04",
        category: Abuse::HateItalian,
        pick: 7,
        times: 24,
        every_secs: 1800,
    },
    Offender {
        resource: "tailspin-support-apac",
        user: "tailspinap-user-03",
        category: Abuse::HateChinese,
        pick: 12,
        times: 20,
        every_secs: 2700,
    },
];

/// The sample registry.
pub fn registry() -> ResourceRegistry {
    let mut registry = ResourceRegistry::default();
    for r in RESOURCES {
        let mut resource = Resource::new(
            ResourceId::parse(r.id).expect("static IDs are valid"),
            Geography::parse(r.geography).expect("static geographies are valid"),
        );
        resource.content_logging = r.content_logging;
        resource.retention_days = r.retention_days;
        if r.customer_key {
            resource.customer_key =
                Some(KeyRef::parse(format!("file:keys/{}.key", r.id)).expect("valid reference"));
        }
        registry.add(resource).expect("static IDs are unique");
    }
    registry
}

/// The sample's customer-managed key, derived from the seed. A sample key: it is checked into
/// the repository and protects nothing.
pub fn sample_customer_key(seed: u64) -> KeyFile {
    let mut key = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973).fill_bytes(&mut key);
    let id = RESOURCES
        .iter()
        .find(|r| r.customer_key)
        .expect("one sample resource has a customer key")
        .id;
    KeyFile {
        relative_path: format!("keys/{id}.key"),
        hex: hex_encode(&key),
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lines that ingest must reject, one of each kind, plus one redelivered record.
pub fn broken_lines(records: &[LogRecord]) -> Vec<Vec<u8>> {
    let first = records.first().expect("sample traffic is not empty");
    let good = first.to_json();
    let mut obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&good).expect("to_json writes an object");
    let with = |changes: &[(&str, Option<serde_json::Value>)]| {
        let mut o = obj.clone();
        o.insert(
            "request_id".into(),
            format!("broken-{}", changes[0].0).into(),
        );
        for (k, v) in changes {
            match v {
                Some(v) => o.insert((*k).into(), v.clone()),
                None => o.remove(*k),
            };
        }
        serde_json::Value::Object(o).to_string().into_bytes()
    };
    let quiet = RESOURCES
        .iter()
        .find(|r| !r.content_logging)
        .expect("one sample resource has content logging off");
    let keyed = RESOURCES
        .iter()
        .find(|r| r.customer_key)
        .expect("one has a key");
    let mut lines = vec![
        // Cut off mid-string.
        good.as_bytes()[..good.len() / 2].to_vec(),
        br#"["not", "an", "object"]"#.to_vec(),
        with(&[("timestamp", None)]),
        with(&[("timestamp", Some("20/11/2026 10:00".into()))]),
        with(&[("operation", Some("transcribe".into()))]),
        with(&[("model", Some(4.into()))]),
        with(&[("resource_id", Some("unregistered-resource".into()))]),
        with(&[
            ("geography", Some("us".into())),
            ("resource_id", Some(keyed.id.into())),
        ]),
        // A record of a resource without content logging that fails validation: its dead
        // letter must not keep the payload.
        with(&[
            ("deployment", Some("local".into())),
            ("resource_id", Some(quiet.id.into())),
            ("geography", Some(quiet.geography.into())),
        ]),
    ];
    obj.insert("request_id".into(), "bad id with spaces".into());
    lines.push(
        serde_json::Value::Object(obj.clone())
            .to_string()
            .into_bytes(),
    );
    // Not UTF-8.
    lines.push(b"{\"request_id\":\"broken-utf8\",\"prompt\":\"caf\xe9\"}".to_vec());
    // A redelivery of a record already in the stream: stored once.
    lines.push(records[records.len() / 3].to_json().into_bytes());
    lines
}
