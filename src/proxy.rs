//! Which HTTP proxy, if any, the client's requests go through.
//!
//! A client talks to one host, so the choice is made once, when it is built:
//! the proxy set on the builder, or the one the environment names for the
//! URL's scheme, unless the host is exempt.

use std::net::IpAddr;

use ureq::Proxy;
use ureq::ProxyProtocol;
use ureq::http::Uri;

use crate::error::{Error, redact_url};

/// The proxy asked for on the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxySetting {
    /// From `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`.
    Environment,
    /// No proxy, whatever the environment says.
    Off,
    /// This proxy URL.
    Url(String),
}

/// The proxy a client uses, and how `Debug` shows it.
#[derive(Debug, Clone)]
pub(crate) struct ChosenProxy {
    pub(crate) proxy: Proxy,
    /// The proxy URL without credentials.
    pub(crate) shown: String,
}

/// Variables naming a proxy for a scheme, most specific first.
fn proxy_variables(scheme: &str) -> [&'static str; 4] {
    match scheme {
        "https" => ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        _ => ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
    }
}

/// Decides the proxy for requests to `target`. `bypass` is a list in
/// `NO_PROXY`'s syntax; `None` means `NO_PROXY` itself for a proxy from the
/// environment and no exemption for one set on the builder. `env` reads a
/// variable.
pub(crate) fn choose(
    setting: &ProxySetting,
    bypass: Option<&str>,
    target: &Uri,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ChosenProxy>, Error> {
    let host = target.host().unwrap_or("");
    let port = target.port_u16().unwrap_or(match target.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let (url, from_env) = match setting {
        ProxySetting::Off => return Ok(None),
        ProxySetting::Url(url) => (url.clone(), None),
        ProxySetting::Environment => {
            let scheme = target.scheme_str().unwrap_or("http");
            let found = proxy_variables(scheme)
                .into_iter()
                .find_map(|name| env(name).filter(|v| !v.is_empty()).map(|v| (name, v)));
            match found {
                // Loopback is never sent to a proxy from the environment, as
                // Go programs such as the docker CLI do.
                Some(_) if is_loopback(host) => return Ok(None),
                Some((name, url)) => (url, Some(name)),
                None => return Ok(None),
            }
        }
    };
    let exempt = match (bypass, from_env) {
        (Some(list), _) => list.to_string(),
        (None, Some(_)) => env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .unwrap_or_default(),
        (None, None) => String::new(),
    };
    if bypasses(&exempt, host, port) {
        return Ok(None);
    }

    let shown = redact_url(&url);
    let unusable = |reason: &str| match from_env {
        Some(name) => Error::Config(format!("{name} ({shown}) {reason}")),
        None => Error::InvalidUrl {
            url: shown.clone(),
            reason: format!("proxy {reason}"),
        },
    };
    let proxy = Proxy::new(&url).map_err(|_| unusable("is not a proxy URL"))?;
    match proxy.protocol() {
        ProxyProtocol::Http | ProxyProtocol::Https => {}
        _ if from_env.is_some() => {
            log::warn!("ignoring {shown} from the environment: SOCKS proxies are not supported");
            return Ok(None);
        }
        _ => {
            return Err(unusable(
                "is SOCKS, which is not supported; use an HTTP proxy",
            ));
        }
    }
    Ok(Some(ChosenProxy { proxy, shown }))
}

/// Whether `host` is a loopback name or address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// Whether `host:port` matches an entry of `list`, a comma-separated list
/// in `NO_PROXY`'s syntax: `*`; a domain, matching itself and its
/// subdomains, with or without a leading `.` or `*.`; an IP address or
/// CIDR block; any of them with `:port`.
pub(crate) fn bypasses(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| entry_matches(&entry.to_ascii_lowercase(), &host, port))
}

fn entry_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let (name, entry_port) = split_port(entry);
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    if let Some((network, bits)) = name.split_once('/') {
        return in_network(host, network, bits);
    }
    if let (Ok(wanted), Ok(ip)) = (name.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return wanted == ip;
    }
    let domain = name.trim_start_matches('*').trim_start_matches('.');
    !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// Splits `host:port`, `[v6]:port` or a bare name or address.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (entry, None),
    }
}

fn in_network(host: &str, network: &str, bits: &str) -> bool {
    let (Ok(ip), Ok(network), Ok(bits)) = (
        host.parse::<IpAddr>(),
        network.parse::<IpAddr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let prefix = |value: u128, width: u32| match bits.min(width) {
        0 => 0,
        kept => value >> (width - kept),
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            prefix(u32::from(ip).into(), 32) == prefix(u32::from(net).into(), 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            prefix(u128::from(ip), 128) == prefix(u128::from(net), 128)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().unwrap()
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn no_proxy_lists_match_domains_addresses_blocks_and_ports() {
        let list = "example.com, .corp.local,*.svc, 10.0.0.0/8, 192.168.1.7, [::1]:8080, host:9000";
        for (host, port) in [
            ("example.com", 443),
            ("api.example.com", 443),
            ("a.corp.local", 80),
            ("x.svc", 80),
            ("10.2.3.4", 9443),
            ("192.168.1.7", 1),
            ("[::1]", 8080),
            ("host", 9000),
        ] {
            assert!(bypasses(list, host, port), "{host}:{port} should bypass");
        }
        for (host, port) in [
            ("notexample.com", 443),
            ("11.0.0.1", 80),
            ("192.168.1.8", 1),
            ("[::1]", 80),
            ("host", 9001),
            ("svc.other", 80),
        ] {
            assert!(
                !bypasses(list, host, port),
                "{host}:{port} should use the proxy"
            );
        }
        assert!(bypasses("*", "anything", 1));
        assert!(!bypasses("", "anything", 1));
    }

    #[test]
    fn the_environment_is_read_by_scheme_and_spares_loopback() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "http://user:pw@plain-proxy:3128"),
            ("NO_PROXY", "internal.example"),
        ]);
        let https = choose(
            &ProxySetting::Environment,
            None,
            &uri("https://p.example.com"),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(https.proxy.host(), "secure-proxy");
        let http = choose(
            &ProxySetting::Environment,
            None,
            &uri("http://p.example.com:9000"),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(http.proxy.host(), "plain-proxy");
        assert!(!http.shown.contains("pw"), "{}", http.shown);
        for direct in [
            "https://internal.example",
            "http://127.0.0.1:9000",
            "https://localhost",
        ] {
            let chosen = choose(&ProxySetting::Environment, None, &uri(direct), &env).unwrap();
            assert!(chosen.is_none(), "{direct} went through a proxy");
        }
    }

    #[test]
    fn a_builder_proxy_is_used_for_loopback_unless_bypassed_or_off() {
        let env = env_of(&[("NO_PROXY", "*")]);
        let setting = ProxySetting::Url("http://127.0.0.1:3128".into());
        let target = uri("http://127.0.0.1:9000");
        assert!(choose(&setting, None, &target, &env).unwrap().is_some());
        assert!(
            choose(&setting, Some("127.0.0.1"), &target, &env)
                .unwrap()
                .is_none()
        );
        assert!(
            choose(
                &ProxySetting::Off,
                None,
                &target,
                env_of(&[("HTTP_PROXY", "http://p:1")])
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn unusable_proxies_are_refused_or_skipped() {
        let socks = ProxySetting::Url("socks5://127.0.0.1:1080".into());
        let target = uri("https://p.example.com");
        let none = env_of(&[]);
        assert!(matches!(
            choose(&socks, None, &target, &none),
            Err(Error::InvalidUrl { .. })
        ));
        let from_env = env_of(&[("ALL_PROXY", "socks5://127.0.0.1:1080")]);
        assert!(
            choose(&ProxySetting::Environment, None, &target, &from_env)
                .unwrap()
                .is_none()
        );
        let bad = env_of(&[("HTTPS_PROXY", "ftp://user:secret@x")]);
        let err = choose(&ProxySetting::Environment, None, &target, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTPS_PROXY") && !err.contains("secret"),
            "{err}"
        );
    }
}
