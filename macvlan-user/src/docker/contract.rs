//! TEMPORARY: the foreign-endpoint types of the reconciling core, as agreed
//! for `controller/foreign.rs` and `model::Owner` (being written on main).
//! Removed when main is merged; only the `use` lines in this module change.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use crate::model::{Mac, MacvlanMode, Policy, XdpMode};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    #[default]
    Mvnet,
    Docker,
    Cni {
        network: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignNetwork {
    pub owner: Owner,
    pub id: String,
    pub name: String,
    pub parent: String,
    pub mode: MacvlanMode,
    pub policy: Policy,
    pub xdp_mode: XdpMode,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignContainer {
    pub owner: Owner,
    pub id: String,
    pub name: String,
    pub netns: PathBuf,
    pub pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignEndpoint {
    pub network_id: String,
    pub ifname: String,
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}
