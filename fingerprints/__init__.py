"""Fingerprints of image classifiers and audits of suspect deployments.

Modules (one job each):

* :mod:`fingerprints.base` -- the method contract and :class:`FingerprintSet`;
* :mod:`fingerprints.generators` -- C-, RC-, LTRC-examples, IPGuard, misclassified;
* :mod:`fingerprints.frequency` -- FFT high-pass projection;
* :mod:`fingerprints.zoo` -- the suspect zoo (derived and independent models), cached;
* :mod:`fingerprints.verify`, :mod:`fingerprints.metrics`, :mod:`fingerprints.summary`,
  :mod:`fingerprints.bank` -- label-only verification, ROC / AUC / calibration / p-values,
  record entries, cached fingerprints and zoo evaluations;
* :mod:`fingerprints.stage` -- the pipeline stage;
* :mod:`fingerprints.audit`, :mod:`fingerprints.audit_cli` -- ``suite audit``;
* :mod:`fingerprints.suspects`, :mod:`fingerprints.suspect_worker`,
  :mod:`fingerprints.isolation`, :mod:`fingerprints.safe_pt2` -- loading untrusted
  suspects in an isolated worker process with time limits.
"""
