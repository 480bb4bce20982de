//! The tags pgec2 puts on EC2 resources, beyond the host identity of [`crate::cloud::tags`],
//! and the filters that find resources by them.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};

use crate::cloud::{HostRef, tags};

/// On the data volume: `data`. Root volumes carry the host tags too; this tells them apart.
pub const VOLUME_ROLE: &str = "pgec2.io/volume";
/// Value of [`VOLUME_ROLE`] on a data volume.
pub const DATA_ROLE: &str = "data";
/// On a retained data volume whose host was deleted: `true`. A new host of the same
/// `pgec2.io/host` adopts it.
pub const RELEASED: &str = "pgec2.io/released";
/// On an instance launched to adopt a released volume: that volume's id.
pub const ADOPT_VOLUME: &str = "pgec2.io/adopt-volume";
/// On a final snapshot: the id of the volume it was taken from.
pub const SOURCE_VOLUME: &str = "pgec2.io/source-volume";

/// `pgec2.io/host`, `pgec2.io/uid` and `pgec2.io/managed-by` of a host.
pub fn host_tags(host: &HostRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::HOST.to_string(), host.key()),
        (tags::UID.to_string(), host.uid.clone()),
        (tags::MANAGED_BY.to_string(), tags::MANAGER.to_string()),
    ])
}

/// The value of `key` among `tags`.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|tag| tag.key() == Some(key)).and_then(Tag::value)
}

/// A filter on a tag's value.
pub fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

/// A filter on an attribute (`instance-state-name`, `status`, …) with any of `values`.
pub fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.iter().map(|value| value.to_string()).collect())).build()
}

/// SDK tags from a map.
pub fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect()
}
