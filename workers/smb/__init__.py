"""What every SMB user of the house shares (the storage backend ``storage.smb``, the staged-file lookup and the
file-share tree ``fileshare.smbtree``): UNC paths (``unc``), one session per store or tree with its own
connection cache (``session``), the NTSTATUS classification (``status``: transient or permanent, each permanent
one with a how-to-fix hint), renaming an open file on its handle (``rename``) and the one private-module import
(``io``: ``smbclient._io``)."""
