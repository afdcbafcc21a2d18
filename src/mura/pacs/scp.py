"""The node's Storage SCP at the association level: the classes and syntaxes it accepts, whom it
answers, its timeouts and its largest PDU (all from the validated `NodeSettings`)."""

from __future__ import annotations

from typing import Any

from pydicom import uid as uids

from mura.pacs.node_settings import NodeSettings

# The transfer syntaxes a PACS or modality sends radiographs in (video and JPIP syntaxes left out).
TRANSFER_SYNTAXES = [
    uids.ImplicitVRLittleEndian,
    uids.ExplicitVRLittleEndian,
    uids.DeflatedExplicitVRLittleEndian,
    uids.ExplicitVRBigEndian,
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.HTJ2KLossless,
    uids.HTJ2KLosslessRPCL,
    uids.HTJ2K,
    uids.RLELossless,
]


def storage_scp(settings: NodeSettings) -> Any:
    """A pynetdicom AE that answers to `settings.ae_title` only, from the allowed calling AE titles
    (any when none is listed), with every storage class in the syntaxes above, and C-ECHO."""
    from pynetdicom import AE, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_pdu_size = settings.maximum_pdu_size
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.allowed_calling)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:  # every storage class: bad ones are skipped later
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    return ae
