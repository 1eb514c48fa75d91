"""Where the binary attribute labels of the ``generator`` experiment kind come from.

Each source is a choice of the ``[labels]`` section (:mod:`cage.labels.sources`):

* ``classifier``: an observation-space classifier (:mod:`cage.labels.observation`, or the small CNN
  of :mod:`cage.labels.cnn` trained on a labelled folder) labels decoded prior samples
  (:mod:`cage.labels.sampled`);
* ``folder``: a folder of images with an attributes CSV or CelebA's ``list_attr_celeba.txt``
  (:mod:`cage.labels.attributes_file`, :mod:`cage.labels.folder`), encoded with the generator's
  ``encode``, a user encoder, or optimisation-based inversion (:mod:`cage.labels.inversion`);
* ``precomputed``: ``latents.npy`` + ``labels.csv`` (:mod:`cage.labels.precomputed`).

Source images for counterfactual pairs come with the labels: the real images of a folder, or the
decoded latents otherwise (:mod:`cage.labels.pool`).
"""

__all__ = ["attributes_file", "cnn", "folder", "inversion", "observation", "pool", "precomputed", "sampled", "sources"]
