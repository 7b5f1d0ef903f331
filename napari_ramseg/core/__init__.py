"""Pure numpy + torch engine; never imports Qt, napari or magicgui."""
