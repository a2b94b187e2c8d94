"""Content-addressed blob storage behind one small async protocol."""
