"""RFI and data-quality flagging of a group's Measurement Set, and its flag versions."""
