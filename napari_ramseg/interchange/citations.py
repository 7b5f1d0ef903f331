"""What a shared model must credit: the method's paper and the public data sets it was trained on.

A model's ``model.json`` names its source domains; the domains of the public data sets this project
knows (``../shared/data/README.md``) map to their paper, DOI and terms here. A domain not in the
table is named in the package as training data of unknown licence rather than guessed at.
DOIs are used rather than URLs: a DOI is checked by its form only, so validating a package never
needs the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Citation:
    text: str
    doi: str
    licence: str = ""  # the data's terms of use, in words (data sets only)


METHOD = Citation(
    "Zhou Z., Qi L., Shi Y.: Generalizable Medical Image Segmentation via Random Amplitude Mixup and "
    "Domain-Specific Image Restoration. ECCV 2022 (arXiv 2208.03901)",
    "10.48550/arXiv.2208.03901",
)

_PROSTATE_SITES = Citation(
    "Liu Q., Dou Q., Heng P.-A.: Shape-Aware Meta-Learning for Generalizing Prostate MRI Segmentation to "
    "Unseen Domains. MICCAI 2020 (the multi-site prostate set: NCI-ISBI 2013, I2CVB, PROMISE12)",
    "10.48550/arXiv.2007.02035",
    "research use",
)

DATASETS: dict[str, Citation] = {
    "hrf": Citation("Budai A., Bock R., Maier A., Hornegger J., Michelson G.: Robust Vessel Segmentation in "
                    "Fundus Images. Int J Biomed Imaging 2013 (HRF)", "10.1155/2013/154860", "CC0 (the owner's grant)"),
    "stare": Citation("Hoover A., Kouznetsova V., Goldbaum M.: Locating Blood Vessels in Retinal Images by Piecewise "
                      "Threshold Probing of a Matched Filter Response. IEEE TMI 2000 (STARE)", "10.1109/42.845178",
                      "free for research; cite the paper"),
    "chasedb1": Citation("Fraz M. M. et al.: An Ensemble Classification-Based Approach Applied to Retinal Blood "
                         "Vessel Segmentation. IEEE TBME 2012 (CHASE_DB1, Kingston University)",
                         "10.1109/TBME.2012.2205687", "CC BY 4.0: credit the authors"),
    "drishtigs": Citation("Sivaswamy J. et al.: Drishti-GS: Retinal Image Dataset for Optic Nerve Head (ONH) "
                          "Segmentation. ISBI 2014", "10.1109/ISBI.2014.6867807", "research use"),
    "drionsdb": Citation("Carmona E. J. et al.: Identification of the Optic Nerve Head with Genetic Algorithms. "
                         "Artif Intell Med 2008 (DRIONS-DB)", "10.1016/j.artmed.2008.04.005", "research use"),
    "promise12": Citation("Litjens G. et al.: Evaluation of Prostate Segmentation Algorithms for MRI: the PROMISE12 "
                          "Challenge. Med Image Anal 2014", "10.1016/j.media.2013.12.002", "research use"),
    **{site: _PROSTATE_SITES for site in ("runmc", "bmc", "i2cvb", "ucl", "bidmc", "hk")},
}


def _key(domain: str) -> str:
    return re.sub(r"[^a-z0-9]", "", domain.lower())


def dataset_citation(domain: str) -> Citation | None:
    """The public data set a source domain comes from, if this project knows it."""
    return DATASETS.get(_key(domain))


def training_data(domains: list[str]) -> tuple[list[tuple[str, Citation]], list[str]]:
    """(known domains with their citation, one entry per distinct citation; unknown domains)."""
    known: list[tuple[str, Citation]] = []
    unknown: list[str] = []
    for domain in domains:
        citation = dataset_citation(domain)
        if citation is None:
            unknown.append(domain)
        elif all(citation != c for _, c in known):
            known.append((domain, citation))
        else:  # a second site of the same collection: one entry, both names
            i = next(i for i, (_, c) in enumerate(known) if c == citation)
            known[i] = (f"{known[i][0]}, {domain}", citation)
    return known, unknown


def training_data_markdown(domains: list[str]) -> str:
    """The card's "Training data and licences" section."""
    known, unknown = training_data(domains)
    lines = ["## Training data and licences", ""]
    lines += [f"- {names}: {c.text}, doi:{c.doi}. Terms: {c.licence}." for names, c in known]
    lines += [f"- {d}: not a public data set napari-ramseg knows; its terms of use are not recorded here."
              for d in unknown]
    lines += ["", "The training images are not part of this package."]
    return "\n".join(lines)
