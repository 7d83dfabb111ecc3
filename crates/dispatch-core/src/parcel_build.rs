//! Building and loading parcels. (Being written.)
use std::path::Path;

use crate::parcel::{Parcel, ParcelError};

pub(crate) fn build(_context: &Path, _parcels_root: &Path) -> Result<Parcel, ParcelError> {
    unimplemented!("parcel building is being written")
}

pub(crate) fn load(_dir: &Path) -> Result<Parcel, ParcelError> {
    unimplemented!("parcel loading is being written")
}

pub(crate) fn list(_parcels_root: &Path) -> Vec<Parcel> {
    Vec::new()
}
