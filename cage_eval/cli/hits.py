"""``cage-eval`` commands: hits (build the blinded HIT items and preview pages), export-batch
(template + input CSV for MTurk's requester website)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from cage_eval import runs as _runs

DOMAINS = ("digits", "faces")


def _texts(domain: str, texts_file: str | None):
    """The HIT texts of a file, else of a built-in domain."""
    from hitgen.texts import HitTexts

    return HitTexts.from_file(Path(texts_file)) if texts_file else HitTexts.for_domain(domain)


def _text_options(func):
    func = click.option("--templates", "templates_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help="Directory searched before the built-in templates "
                        "(mturk.html.jinja, turkle.html.jinja, batch.html.jinja, partials).")(func)
    func = click.option("--texts", "texts_file", type=click.Path(dir_okay=False), default=None,
                        help="JSON or TOML file with the seven HIT texts (title, description, keywords, "
                        "question, instructions, top_label, bottom_label); overrides --domain.")(func)
    func = click.option("--domain", type=click.Choice(DOMAINS), default=None,
                        help="Built-in wording of the realism question (default: the run's "
                        "[hits] domain, else digits).")(func)
    return func


@click.command("hits")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True,
              help="Placement seed (top/bottom per HIT and HIT order).")
@click.option("--attention-rate", type=float, default=0.0, show_default=True,
              help="Attention checks per pair (0.1 = one clean-vs-corrupted check per ten pairs).")
@_text_options
@click.option("--preview/--no-preview", default=True, show_default=True,
              help="Render every MTurk page into RUN/hits_preview/ (images inlined).")
@click.option("--force", is_flag=True,
              help="Replace an existing hit_items.csv that differs (only before anything is published).")
def hits_command(run, seed, attention_rate, domain, texts_file, templates_dir, preview, force):
    """Build RUN/hit_items.csv (the local blinding map) and preview the MTurk HIT pages.

    Every pair becomes one HIT showing its two images top and bottom; which one is on top is
    random per HIT and balanced within each DAG and setting. The mapping stays in hit_items.csv,
    never in a page. Rerunning with the same options changes nothing.

    \b
    Example:
      cage-eval hits runs/digits --attention-rate 0.1
      open runs/digits/hits_preview/index.html
    """
    from cage_eval import files, runs
    from cage_eval.errors import RunDirError
    from hitgen.hosting import DataUriHost
    from hitgen.items import plan_hit_items, read_hit_items, write_hit_items
    from hitgen.preview import default_preview_dir, question_sizes, write_previews
    from hitgen.render import template_digest

    texts = _texts(_runs.hit_domain(run, domain), texts_file)
    runs.read_manifest(run)
    # hit_items.csv must not change under a publish that reads it (and the reverse).
    click.get_current_context().with_resource(files.run_lock(run, "given its HIT items"))
    plan = plan_hit_items(run, seed=seed, attention_rate=attention_rate)
    items = plan.items
    published = [name for name in (runs.LEDGER, runs.TURKLE_LEDGER) if (run / name).exists()]
    if (run / runs.HIT_ITEMS).exists():
        try:
            existing = read_hit_items(run)
        except RunDirError:
            if published:
                raise
            existing = None
        if existing != items and published:
            raise RunDirError(f"{run / published[0]}: HITs were already published from "
                              f"{run / runs.HIT_ITEMS}, so it cannot change; rerun with the original "
                              "--seed and --attention-rate, or make a new run")
        if existing != items and not force:
            raise RunDirError(f"{run / runs.HIT_ITEMS}: exists with a different placement; pass "
                              "--force to replace it (nothing has been published from it)")
    host = DataUriHost(run, pending=plan.new_images)
    if preview:
        summary = write_previews(default_preview_dir(run), items, host, texts,
                                 templates_dir=templates_dir)
        largest = summary.max_question_bytes
    else:
        largest = max(question_sizes(items, host, texts, templates_dir=templates_dir).values())
    plan.write_images(run)
    path = write_hit_items(run, items)

    pairs = [it for it in items if it.kind == "pair"]
    n_attention = len(items) - len(pairs)
    click.echo(f"{path}: {len(items)} HIT items ({len(pairs)} pairs, {n_attention} attention checks)")
    cells = Counter((it.dag, it.setting) for it in pairs)
    cause_top = Counter((it.dag, it.setting) for it in pairs if it.role_top == "cause")
    for dag, setting in sorted(cells):
        click.echo(f"  {dag:<24} {setting:<17} {cells[dag, setting]:>5} pairs, cause on top in "
                   f"{cause_top[dag, setting]}")
    click.echo(f"largest HTMLQuestion with inlined images: {largest:,} bytes (limit 65,535)")
    if largest > 65_535:
        click.echo("  over MTurk's limit with inlined images (large images, e.g. faces): publish on "
                   "MTurk with the images on S3 (--s3-bucket), or on Turkle with --images server")
    if preview:
        click.echo(f"preview: {summary.directory / 'index.html'}")
    click.echo(f"templates: {template_digest(templates_dir)} "
               f"({templates_dir or 'built-in'}; sha256 of every template in effect)")


@click.command("export-batch")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New directory for batch_template.html and batch_input.csv.")
@_text_options
@click.option("--image-base-url", default=None,
              help="Public HTTPS URL where you will upload the exported images/ folder; "
                   "default: images inlined as data URIs.")
@click.option("--s3-bucket", "--bucket", "s3_bucket", default=None, help="Upload the images to this existing bucket and "
              "use presigned URLs instead.")
@click.option("--s3-prefix", default="cage-eval/", show_default=True, help="Key prefix in the bucket.")
@click.option("--expires-in", type=int, default=3 * 24 * 3600, show_default=True,
              help="Seconds the presigned URLs stay valid (at least the HIT lifetime; at most 7 days).")
@click.option("--profile", default=None, help="AWS profile (for --s3-bucket).")
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (for --s3-bucket).")
@click.option("--region", default=None, help="AWS region (for --s3-bucket).")
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory (never a run, "
              "a directory above one, or one that holds a published study).")
def export_batch_command(run, out, domain, texts_file, templates_dir, image_base_url, s3_bucket,
                         s3_prefix, expires_in, profile, endpoint_url, region, force):
    """Export a requester-website batch: an HTML template and its input CSV.

    Upload batch_template.html as the project's design layout and batch_input.csv as the batch
    on MTurk's requester website. The CSV holds only the opaque item_id and image URLs; the
    top/bottom roles stay in RUN/hit_items.csv, which `cage-eval analyze` joins on item_id.
    Needs `cage-eval hits RUN` first.

    \b
    Example:
      cage-eval export-batch runs/digits --out batch/ --image-base-url https://example.org/hits
    """
    from cage_eval import files, runs
    from cage_eval.errors import ConfigError
    from hitgen.batch import EXPORT, export_batch
    from hitgen.hosting import DataUriHost, UrlPrefixHost
    from hitgen.items import read_hit_items

    if image_base_url is not None and s3_bucket is not None:
        raise ConfigError("--image-base-url and --s3-bucket exclude each other; choose one")
    texts = _texts(_runs.hit_domain(run, domain), texts_file)
    manifest = runs.read_manifest(run)
    items = read_hit_items(run)
    images = sorted({n for it in items for n in (it.image_top, it.image_bottom)})
    if s3_bucket is not None:
        from mturk.aws import make_client
        from mturk.images_s3 import S3ImageHost

        prefix = f"{s3_prefix}{manifest['run_id']}/" if s3_prefix else f"{manifest['run_id']}/"
        host = S3ImageHost(make_client("s3", profile=profile, endpoint_url=endpoint_url,
                                       region=region),
                           s3_bucket, run, prefix=prefix, expires_in=expires_in)
    elif image_base_url is not None:
        host = UrlPrefixHost(run, image_base_url)
    else:
        host = DataUriHost(run)
    with files.staged_run_dir(out, force=force, keep=(run,), maker=EXPORT,
                              run_id=manifest.get("run_id"), activity="exported") as stage:
        uploaded = host.upload(images) if s3_bucket is not None else 0
        result = export_batch(stage, items, host, texts, templates_dir=templates_dir,
                              copy_images_from=run if image_base_url is not None else None)
    click.echo(f"{out / result.template.name}: the design layout (paste it as the project's HTML)")
    click.echo(f"{out / result.input_csv.name}: {result.rows} rows (item_id, image_top, image_bottom)")
    if image_base_url is not None:
        click.echo(f"{out / 'images'}: {result.images_copied} images; upload them so that "
                   f"{image_base_url.rstrip('/')}/<name> serves each one")
    if s3_bucket is not None:
        click.echo(f"s3://{s3_bucket}/{host.prefix}: {uploaded} images uploaded, "
                   f"{len(images) - uploaded} already there; URLs valid {expires_in:,} s")
    click.echo(f"largest filled page: {result.max_page_bytes:,} bytes (limit 65,535)")


COMMANDS: list[click.Command] = [hits_command, export_batch_command]
