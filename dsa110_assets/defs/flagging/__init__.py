"""Flagging assets: RFI and data-quality flags of each group before calibration."""
