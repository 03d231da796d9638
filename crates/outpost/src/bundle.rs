//! `outpost bundle create` and `outpost bundle import`: a release carried
//! to sites without an uplink (format: `outpost_proto::bundle`; what the
//! agent does with it: `outpost_agent::import`).

use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};
use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, TagImageOptions};
use futures_util::StreamExt;
use outpost_agent::import::{self, Held};
use outpost_agent::store::DesiredStore;
use outpost_api::wire::BundleRequest;
use outpost_cli::Client;
use outpost_proto::bundle::{self, Hashing};

/// Images travel in chunks of this size from the file into the engine.
const CHUNK: usize = 1 << 20;

/// `outpost bundle create --deployment NAME [--version V] -o FILE`.
pub async fn create(
    client: &Client,
    deployment: &str,
    version: Option<&str>,
    output: &Path,
) -> Result<String> {
    let plan = client
        .bundle(
            deployment,
            &BundleRequest {
                version: version.map(str::to_string),
                ..Default::default()
            },
        )
        .await?;
    if plan.sites.is_empty() {
        anyhow::bail!("deployment {deployment} selects no site: there is nothing to bundle");
    }
    let docker = bollard::Docker::connect_with_local_defaults().context("connecting to the Docker Engine")?;
    let credentials = outpost_agent::registry_credentials(None)?;
    // Each image under the name the host will look for (a digest
    // reference under a tag of its digest: an archive keeps no digest).
    let mut names = Vec::new();
    for image in &plan.images {
        if docker.inspect_image(image).await.is_err() {
            eprintln!("pulling {image}");
            let auth = outpost_agent::registry::for_image(&credentials, image).map(|c| {
                bollard::auth::DockerCredentials {
                    username: Some(c.username.clone()),
                    password: Some(c.password.clone()),
                    serveraddress: Some(c.registry.clone()),
                    ..Default::default()
                }
            });
            let options = CreateImageOptions {
                from_image: Some(image.clone()),
                ..Default::default()
            };
            let mut steps = docker.create_image(Some(options), None, auth);
            while let Some(step) = steps.next().await {
                step.with_context(|| format!("pulling {image}"))?;
            }
        }
        let name = outpost_agent::runtime::local_name(image).unwrap_or_else(|| image.clone());
        if name != *image {
            let (repo, tag) = name.rsplit_once(':').context("a tag")?;
            docker
                .tag_image(
                    image,
                    Some(TagImageOptions {
                        repo: Some(repo.to_string()),
                        tag: Some(tag.to_string()),
                    }),
                )
                .await
                .with_context(|| format!("naming {image} as {name}"))?;
        }
        names.push(name);
    }
    // The archive first, into a file beside the output; its digest goes
    // into the header the control plane signs.
    let staging = output.with_extension("archive.partial");
    let mut archive = BufWriter::new(
        std::fs::File::create(&staging).with_context(|| format!("writing {}", staging.display()))?,
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut exported = docker.export_images(&refs);
    while let Some(chunk) = exported.next().await {
        archive.write_all(&chunk.context("saving the images")?)?;
    }
    archive.flush()?;
    drop(archive);
    let mut hashing = Hashing::new(std::fs::File::open(&staging)?);
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    let (sha256, bytes) = hashing.finish();
    let signed = client
        .bundle(
            deployment,
            &BundleRequest {
                version: Some(plan.version.clone()),
                archive_sha256: Some(sha256),
                archive_bytes: Some(bytes),
            },
        )
        .await?;
    let header = signed.header.context("the control plane signed no header")?;
    let signature = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        signed.signature.context("the control plane sent no signature")?,
    )
    .context("the control plane's signature is not base64")?;
    let mut out = BufWriter::new(
        std::fs::File::create(output).with_context(|| format!("writing {}", output.display()))?,
    );
    bundle::write_head(&mut out, header.as_bytes(), &signature)?;
    std::io::copy(&mut std::fs::File::open(&staging)?, &mut out)?;
    out.flush()?;
    std::fs::remove_file(&staging)?;
    Ok(format!(
        "bundle of deployment {deployment} version {} for {} site(s), {} image(s), {} written to {}\n",
        signed.version,
        signed.sites.len(),
        names.len(),
        outpost_api::quantity::approximate_bytes(bytes),
        output.display()
    ))
}

/// `outpost bundle import FILE [--data-dir DIR]`.
pub async fn import(file: &Path, data_dir: &Path) -> Result<String> {
    let credentials = outpost_agent::identity::load(data_dir)?.with_context(|| {
        format!(
            "{} holds no enrolled host (pass the agent's --data-dir)",
            data_dir.display()
        )
    })?;
    let site = credentials.identity.site;
    let ca_pem = credentials.trust.pem();
    let opened = || -> Result<BufReader<std::fs::File>> {
        Ok(BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let mut reader = opened()?;
    let (header_json, signature) = bundle::read_head(&mut reader)?;
    let head_length = reader.stream_position()?;
    let store = outpost_agent::store::LocalStore::open(&data_dir.join("agent.db")).await?;
    let held = Held {
        revision: store.desired().await?.0,
        imported: store.imported().await?,
    };
    store.close().await;
    let (header, ours) = import::accept((&header_json, &signature), &ca_pem, &site, held)?;
    bundle::check_archive(&header, &mut reader)?;

    // Checked whole: now the images go in, then the head to the agent.
    let mut archive = opened()?;
    archive.seek(std::io::SeekFrom::Start(head_length))?;
    let chunks = futures_util::stream::unfold(archive, |mut archive| async move {
        let mut buf = vec![0; CHUNK];
        match archive.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), archive))
            }
            Err(err) => Some((Err(err), archive)),
        }
    });
    let docker = bollard::Docker::connect_with_local_defaults().context("connecting to the Docker Engine")?;
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut steps = docker.import_image_stream(options, chunks, None);
    while let Some(step) = steps.next().await {
        step.context("loading the bundle's images")?;
    }
    let dir = import::dir(data_dir);
    outpost_files::create_private_dir(&dir)?;
    let name = format!("{}-{}.head", header.created_ms, header.deployment);
    let partial = dir.join(format!("{name}.partial"));
    let mut head = Vec::new();
    bundle::write_head(&mut head, &header_json, &signature)?;
    outpost_files::write_private(&partial, &head)?;
    std::fs::rename(&partial, dir.join(&name))?;
    Ok(format!(
        "bundle of deployment {} version {} accepted for site {site} (revision {}): {} image(s) loaded; the agent runs it within {}s\n",
        header.deployment,
        header.version,
        ours.revision,
        header.images.len(),
        import::POLL.as_secs()
    ))
}
