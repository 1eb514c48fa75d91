"""``cage-eval`` commands: train."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []


@click.command("train")
@click.option("--experiment", "-e", default="digits", show_default=True,
              help="Built-in experiment name or path to a .toml file (kind 'digits' or "
                   "'morphomnist').")
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
    """Train an image experiment's generator and observation classifier from scratch.

    Builds (or loads) the dataset, trains both models deterministically (one thread) and writes the
    weights. Kind 'digits': the VAE bundle digits_vae.pt, digits_obs.pt, digits_weights.json.
    Kind 'morphomnist': the Glow flow and the CNN, morphomnist_flow_<key>.pt/.json and
    morphomnist_obs_<key>.pt/.json (the flow takes 30-40 minutes on 2 cores). With the built-in
    settings this reproduces the weights shipped in cage/experiments/digits/weights/ and says so.

    \b
    Examples:
      cage-eval train                       # into the cache, used by `cage-eval generate`
      cage-eval train --out cage/experiments/digits/weights    # regenerate the shipped weights
      cage-eval train --seed 3 --out w3/    # another seed
      cage-eval train -e morphomnist --out cage/experiments/mnist/weights
    """
    from pathlib import Path

    from cage.config.experiment import default_cache_dir, load_experiment
    from cage.experiments.digits.kind import parse_options
    from cage.experiments.digits.models import cache_bundle_dir, read_shipped_meta, train_and_write
    from cage_eval.errors import ConfigError

    items = list(overrides)
    if seed is not None:
        generator = "flow" if load_experiment(experiment).kind == "morphomnist" else "vae"
        items += [f"data.seed={seed}", f"{generator}.seed={seed}", f"obs_classifier.seed={seed}"]
    config = load_experiment(experiment, overrides=items)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if config.kind == "morphomnist":
        _train_morphomnist(config, out, cache)
        return
    if config.kind != "digits":
        raise ConfigError(f"{config.source}: [experiment] kind = {config.kind!r}: `cage-eval train` "
                          "trains the 'digits' and 'morphomnist' kinds; the others train inside "
                          "`cage-eval generate`")
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


def _train_morphomnist(config, out, cache):
    from cage.experiments.mnist.kind import parse_options
    from cage.experiments.mnist.models import cache_dir_for, shipped_meta, train_and_write

    configs = parse_options(config).models
    target = out if out else cache_dir_for(cache)

    def progress(step, bpd):
        click.echo(f"  flow step {step}/{configs.flow.steps}: train {bpd:.3f} bits/dim")

    written = train_and_write(configs, cache, target, progress=progress)
    flow_meta, obs_meta = written["flow"][1], written["obs"][1]
    rep = flow_meta["report"]
    click.echo(f"dataset: {rep['n_train'] + rep['n_test']} images (image key "
               f"{configs.data.image_key()})")
    click.echo(f"flow: {rep['steps']} steps in {rep['seconds']:.0f} s, {flow_meta['params']} "
               f"parameters; bits/dim train {rep['train_bpd']:.3f}, held out {rep['test_bpd']:.3f}")
    accs = ", ".join(f"{a} {v:.3f}" for a, v in obs_meta["report"]["accuracy"].items())
    click.echo(f"observation classifier (held-out accuracy): {accs}")
    for component, (path, meta) in written.items():
        click.echo(f"wrote {path}  sha256 {meta['sha256'][:16]}")
        shipped = shipped_meta(path.stem)
        if shipped is not None:
            same = shipped.get("sha256") == meta["sha256"]
            click.echo(f"{component}: identical to the shipped weights: " + ("yes" if same else "no"))


COMMANDS.append(train)
