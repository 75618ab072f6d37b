//! `inspect` (docker image inspect JSON, or a Go template with -f) and `history`.

use super::list::{human_since, human_size, print_table};
use super::template::GoTemplate;
use anyhow::bail;
use rbuild_layerfs::image::parse_rfc3339;
use rbuild_layerfs::{Image, Store};
use serde_json::{json, Value};
use std::process::ExitCode;

/// The docker `image inspect` document of an image.
pub fn inspect_json(store: &Store, image: &Image) -> anyhow::Result<Value> {
    let tags: Vec<String> = store
        .images_with_tags()?
        .into_iter()
        .filter(|(d, _)| d.digest().as_ref() == image.manifest_digest.as_str())
        .flat_map(|(_, t)| t)
        .collect();
    let oci_config = serde_json::to_value(image.config.config())?;
    let mut config = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(dst), Value::Object(src)) = (config.as_object_mut(), oci_config) {
        for (k, v) in src {
            dst.insert(k, v);
        }
    }
    let history_comment = image
        .config
        .history()
        .as_ref()
        .and_then(|h| h.last())
        .and_then(|h| h.comment().clone())
        .unwrap_or_default();
    let layers_dirs: Vec<String> = image
        .diff_ids()
        .iter()
        .rev()
        .map(|d| store.layer_dir(d).display().to_string())
        .collect();
    Ok(json!({
        "Id": image.id().to_string(),
        "RepoTags": tags,
        "RepoDigests": [],
        "Parent": "",
        "Comment": history_comment,
        "Created": image.config.created().clone().unwrap_or_default(),
        "DockerVersion": "",
        "Author": image.config.author().clone().unwrap_or_default(),
        "Config": config,
        "Architecture": image.config.architecture().to_string(),
        "Variant": image.config.variant(),
        "Os": image.config.os().to_string(),
        "Size": store.image_size(image),
        "GraphDriver": {
            "Name": "overlay",
            "Data": { "LowerDir": layers_dirs.join(":") },
        },
        "RootFS": {
            "Type": "layers",
            "Layers": image.diff_ids().iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "Descriptor": {
            "mediaType": image.descriptor().media_type().to_string(),
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest_size,
        },
    }))
}

/// `rbuild inspect [-f TEMPLATE] IMAGE...`.
pub fn inspect(store: &Store, format: Option<&str>, names: &[String]) -> anyhow::Result<ExitCode> {
    let template = format.map(GoTemplate::parse).transpose()?;
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match store.resolve_image(name) {
            Ok(image) => docs.push(inspect_json(store, &image)?),
            // Not an image: a container of that name or ID (docker's inspect finds both).
            Err(_) if crate::cmd::container::inspect_value(store.root(), name).is_some() => {
                docs.extend(crate::cmd::container::inspect_value(store.root(), name));
            }
            Err(e) => missing.push(e.to_string()),
        }
    }
    match &template {
        Some(t) => {
            for d in &docs {
                println!("{}", t.render(d)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(docs))?),
    }
    if !missing.is_empty() {
        bail!("{}", missing.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `rbuild history IMAGE`: newest first, like docker.
pub fn history(store: &Store, name: &str, no_trunc: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    let image = store.resolve_image(name)?;
    let history = image.config.history().clone().unwrap_or_default();
    let mut rows = Vec::new();
    let mut layer_index = 0;
    for h in &history {
        let empty = h.empty_layer().unwrap_or(false);
        let size = if empty {
            0
        } else {
            let s = store.layer_size(&image, layer_index);
            layer_index += 1;
            s
        };
        rows.push((h.clone(), size));
    }
    rows.reverse();
    let id = if no_trunc {
        image.id().to_string()
    } else {
        image.id().short().to_string()
    };
    if quiet {
        println!("{id}");
        for _ in 1..rows.len() {
            println!("<missing>");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![vec![
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for (i, (h, size)) in rows.iter().enumerate() {
        let created = h
            .created()
            .as_deref()
            .and_then(parse_rfc3339)
            .map(human_since)
            .unwrap_or_default();
        let mut by = h.created_by().clone().unwrap_or_default();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        table.push(vec![
            if i == 0 {
                id.clone()
            } else {
                "<missing>".into()
            },
            created,
            by,
            human_size(*size),
            h.comment().clone().unwrap_or_default(),
        ]);
    }
    print_table(table);
    Ok(ExitCode::SUCCESS)
}
