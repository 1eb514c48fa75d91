"""The built-in digits data set (Morpho-MNIST-style thickness -> intensity) and its shipped models:
the data (:mod:`cage.digits.data`), the morphometrics (:mod:`cage.digits.morpho`), the observation
classifier (:mod:`cage.digits.obs_classifier`) and the weights bundle (:mod:`cage.digits.models`,
files in ``cage/digits/weights/``)."""
