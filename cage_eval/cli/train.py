"""``cage-eval`` commands: train."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []


@click.command("train")
@click.option("--experiment", "-e", default="digits", show_default=True,
              help="Built-in experiment name or path to a .toml file (kind 'digits').")
@click.option("--out", "out", type=click.Path(), default=None,
              help="Directory for the weights bundle [default: the cache directory, where "
                   "`cage-eval generate` finds it].")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the dataset draws, the VAE and the observation classifier "
                   "[default: the experiment's [data], [vae] and [obs_classifier] seeds].")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override an experiment field, e.g. --set vae.epochs=10 (repeatable).")
@click.option("--cache-dir", type=click.Path(), default=None, envvar="CAGE_EVAL_CACHE",
              help="Where the dataset is cached [default: $CAGE_EVAL_CACHE or ~/.cache/cage-eval].")
def train(experiment, out, seed, overrides, cache_dir):
    """Train the digits experiment's generator (VAE) and observation classifier from scratch.

    Builds (or loads) the dataset, trains both models deterministically (one thread) and writes the
    weights bundle: digits_vae.pt, digits_obs.pt, digits_weights.json. With the built-in settings
    this reproduces the weights shipped in cage/digits/weights/ and says so.

    \b
    Example:
      cage-eval train                       # into the cache, used by `cage-eval generate`
      cage-eval train --out cage/digits/weights    # regenerate the shipped weights
      cage-eval train --seed 3 --out w3/    # another seed
    """
    from pathlib import Path

    from cage.config import default_cache_dir, load_experiment
    from cage.digits.models import cache_bundle_dir, read_shipped_meta, train_and_write
    from cage.experiments.digits import parse_options
    from cage_eval.errors import ConfigError

    items = list(overrides)
    if seed is not None:
        items += [f"data.seed={seed}", f"vae.seed={seed}", f"obs_classifier.seed={seed}"]
    config = load_experiment(experiment, overrides=items)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if config.kind != "digits":
        raise ConfigError(f"{config.source}: [experiment] kind = {config.kind!r}: `cage-eval train` "
                          "trains the 'digits' kind; the others train inside `cage-eval generate`")
    configs = parse_options(config).models
    target = Path(out) if out else cache_bundle_dir(cache, configs)
    shipped = read_shipped_meta()
    models, directory = train_and_write(configs, cache, target)
    meta = models.meta
    click.echo(f"dataset: {meta['dataset_images']} images (key {configs.data.key()})")
    click.echo(f"vae: {meta['vae']['steps']} steps, final loss {meta['vae']['losses'][-1]:.2f} "
               f"nats/image, reconstruction MSE {meta['vae']['recon_mse']:.5f}")
    accs = ", ".join(f"{a} {v:.3f}" for a, v in meta["obs"]["accuracy_recon"].items())
    click.echo(f"observation classifier (held-out accuracy on reconstructions): {accs}")
    for name, digest in sorted(meta["sha256"].items()):
        click.echo(f"wrote {directory / name}  sha256 {digest[:16]}")
    click.echo(f"wrote {directory / 'digits_weights.json'}")
    if shipped is not None and shipped.get("key") == meta["key"]:
        same = shipped.get("sha256") == meta["sha256"]
        click.echo("identical to the shipped weights: " + ("yes" if same else "no"))


COMMANDS.append(train)
