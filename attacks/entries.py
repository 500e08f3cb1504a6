"""Registry entries of the attacks package (loaded through the ``suite.entries`` entry points).
"""

from __future__ import annotations

from suite.core import registries as reg

# ----------------------------------------------------------------- attacks
reg.attacks.register("uap-pgd", "attacks.uap:UAPPGD", aliases=("uap",),
                     description="universal perturbation by stochastic PGD over mini-batches (Linf/L2)")
reg.attacks.register("uap-deepfool", "attacks.uap:UAPDeepFool", aliases=("uap-original",),
                     description="original UAP algorithm (Moosavi-Dezfooli 2017), foolbox DeepFool inner step")
reg.attacks.register("uap-meta", "attacks.meta:UAPMeta",
                     description="few-shot UAP: MAML-meta-trained learned optimizer + init across sources")
reg.attacks.register("uap-maml", "attacks.meta:UAPMAML",
                     description="ablation: MAML-learned initial UAP (resized per task), plain gradient steps")
reg.attacks.register("uap-l2o", "attacks.meta:UAPL2O",
                     description="ablation: learned optimizer (coordinate-wise LSTM) without the MAML outer loop")
reg.attacks.register("noise-uniform", "attacks.uap:NoiseUniform", aliases=("noise",),
                     description="baseline: random +-eps noise (Linf) or random direction (L2) at the budget")
reg.attacks.register("noise-checkerboard", "attacks.uap:NoiseCheckerboard", aliases=("checkerboard",),
                     description="baseline: +-eps checkerboard (structured noise) at the budget")
reg.attacks.register("pgd", "attacks.perimage:PGD", description="per-image PGD via torchattacks (robust accuracy)")
reg.attacks.register("fgsm", "attacks.perimage:FGSM", description="per-image FGSM via torchattacks (Linf)")
reg.attacks.register("cw", "attacks.perimage:CW", aliases=("carlini-wagner",),
                     description="per-image Carlini-Wagner L2 via torchattacks, counted within the L2 budget")
reg.attacks.register("autoattack", "attacks.perimage:AutoAttack", aliases=("aa",),
                     description="AutoAttack standard via torchattacks (APGD-CE, APGD-T, FAB-T, Square; worst case "
                                 "per image) on a fixed test subset: clean and robust accuracy (RobustBench style)")
reg.attacks.register("square", "attacks.blackbox:Square", aliases=("square-attack",),
                     description="black box, score-based: torchattacks Square through the predictor's logits, "
                                 "query budget per image; runs on every subject, deployments included")
reg.attacks.register("rays", "attacks.blackbox:RayS",
                     description="black box, decision-based: RayS-style ray search on top-1 labels only (Linf), "
                                 "query budget per image; runs on every subject, deployments included")
reg.attacks.register("uap-zo", "attacks.zo:UAPZO", aliases=("uap-zo-signsgd",),
                     description="black box UAP: zeroth-order sign-SGD (random-direction finite differences of the "
                                 "margin loss on the predictor's logits), total query budget; runs on deployments")
reg.attacks.register("uap-meta-zo", "attacks.zo:UAPMetaZO",
                     description="black box UAP: the meta-trained learned optimizer and init (shipped uap-meta state) "
                                 "fed by the same zeroth-order estimate and query budget as uap-zo")
