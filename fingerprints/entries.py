"""Registry entries of the fingerprint methods (loaded through the ``suite.entries`` entry points).
"""

from __future__ import annotations

from suite.core import registries as reg

# ------------------------------------------------------------ fingerprints
reg.fingerprints.register("c-examples", "fingerprints.generators:CExamples", aliases=("c", "ce"),
                          description="characteristic examples: sign-gradient steps to a target label (owner only)")
reg.fingerprints.register("rc-examples", "fingerprints.generators:RCExamples", aliases=("rc",),
                          description="robust CEs: input gradient summed over K weight-noised owner copies")
reg.fingerprints.register("ltrc-examples", "fingerprints.generators:LTRCExamples", aliases=("ltrc",),
                          description="low-transfer robust CEs: RC + FFT high-pass projection of the perturbation")
reg.fingerprints.register("ipguard", "fingerprints.generators:IPGuard",
                          description="[baseline] IPGuard: data points pushed just past the decision boundary")
reg.fingerprints.register("misclassified", "fingerprints.generators:Misclassified", aliases=("misclassified-inputs",),
                          description="[baseline] inputs the owner gets wrong, compared by label agreement")
reg.fingerprints.register("sac-w", "fingerprints.baselines:SACW", aliases=("sac",),
                          description="[baseline] SAC-style: output-correlation matrix over misclassified inputs")
reg.fingerprints.register("sac-m", "fingerprints.baselines:SACM",
                          description="[baseline] SAC-style: output-correlation matrix over CutMix inputs")
reg.fingerprints.register("uap", "fingerprints.baselines:UAPFingerprint", aliases=("uap-fingerprint",),
                          description="[baseline] UAP-based: the owner's universal-perturbation fooling pattern")
